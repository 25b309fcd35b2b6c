//===- Analysis.cpp - MappedTrace liveness analysis ----------------------===//
//
// Per function: (1) whether it can be instrumented at all (skipping rules);
// (2) the call sites that become statepoints and the pointer SSA values live
// across each: classic backward dataflow over the CFG on bit vectors,
//   LiveOut(B) = U_{S in succ(B)} (LiveIn(S) - PhiDefs(S)) u PhiUses(S, B)
//   LiveIn(B)  = UEVar(B) u (LiveOut(B) - Def(B)),
// iterated to a fixpoint, then a backward walk inside each block (so a value
// is recorded exactly where a later use may still read it, not wherever its
// definition dominates); (3) pointer-holding static allocas and where their
// contents are live: a second backward dataflow whose uses are loads (and
// calls that receive the slot, and every memory read once the address
// escapes) and whose kills are whole-slot stores, memset/memcpy of the whole
// slot and lifetime markers; (4) loop headers of loops without mapped calls;
// (5) in functions that call setjmp, the "longjmp edges": what is live after
// a returns_twice call is live across every call site reachable from it
// (addLongjmpEdges). Computed goto needs nothing special.
//
// Run the printer: opt-22 -load-pass-plugin=MappedTracePass.so
//                         -passes='print<mappedtrace>' -disable-output x.ll
//===----------------------------------------------------------------------===//
#include "MappedTrace.h"
#include "llvm/ADT/BitVector.h"
#include "llvm/ADT/PostOrderIterator.h"
#include "llvm/BinaryFormat/Dwarf.h"
#include "llvm/Analysis/CycleAnalysis.h"
#include "llvm/Analysis/LoopInfo.h"
#include "llvm/Analysis/ValueTracking.h"
#include "llvm/IR/CFG.h"
#include "llvm/IR/DebugProgramInstruction.h"
#include "llvm/IR/Dominators.h"
#include "llvm/IR/InlineAsm.h"
#include "llvm/IR/IntrinsicInst.h"
#include <cstdlib>

using namespace llvm;

namespace mappedtrace {

AnalysisKey MappedTraceAnalysis::Key;

// A vector or array of pointers, or a struct with pointer fields (literal or
// named), held as one SSA value (SLP vectors, first-class aggregates): its
// pointer lanes are recorded one by one (the emitter extracts them at the map
// point). Known gap: pointers nested one aggregate deeper, and aggregates of
// more than 16 elements, are not recorded (tests/oracle reports them; none in
// the corpora, Lua or SQLite).
unsigned aggregatePointerCount(Type *T) {
  if (auto *VT = dyn_cast<FixedVectorType>(T))
    return VT->getElementType()->isPointerTy() && VT->getNumElements() <= 16
               ? VT->getNumElements() : 0;
  if (auto *AT = dyn_cast<ArrayType>(T))
    return AT->getElementType()->isPointerTy() && AT->getNumElements() <= 16
               ? AT->getNumElements() : 0;
  if (auto *ST = dyn_cast<StructType>(T)) {
    if (ST->isOpaque() || ST->getNumElements() > 16)
      return 0;
    unsigned N = 0;
    for (Type *E : ST->elements())
      N += E->isPointerTy();
    return N;
  }
  return 0;
}

bool isCandidate(const Function &F) {
  return !F.isDeclaration() && !F.hasAvailableExternallyLinkage() &&
         !F.hasFnAttribute("mappedtrace-thunk");
}

// The debug type of each pointer SSA value (dbg.value of a variable, or the
// subprogram's signature for arguments) and the variable of each alloca
// (dbg.declare / dbg.assign).
void collectValueTypes(Function &F, DenseMap<Value *, const DIType *> &ValueDI,
                       DenseMap<AllocaInst *, const DILocalVariable *> *AllocaVar) {
  for (BasicBlock &BB : F)
    for (Instruction &I : BB)
      for (DbgVariableRecord &DVR : filterDbgVars(I.getDbgRecordRange())) {
        DILocalVariable *Var = DVR.getVariable();
        if (!Var)
          continue;
        if (DVR.isDbgDeclare() || DVR.isDbgAssign()) {
          if (auto *AI = dyn_cast_or_null<AllocaInst>(DVR.getAddress()); AI && AllocaVar)
            AllocaVar->try_emplace(AI, Var);
          if (DVR.isDbgDeclare())
            continue;
        }
        if (DVR.hasArgList() || DVR.getExpression()->getNumElements() != 0)
          continue;
        Value *V = DVR.getValue(0);
        if (V && V->getType()->isPointerTy())
          ValueDI.try_emplace(V, Var->getType());
      }
  // Argument types from the subprogram's signature (C: no hidden arguments).
  if (DISubprogram *SP = F.getSubprogram())
    if (auto *ST = SP->getType()) {
      auto Tys = ST->getTypeArray();
      if (Tys.size() == F.arg_size() + 1 && !F.hasStructRetAttr())
        for (Argument &A : F.args())
          if (A.getType()->isPointerTy() && Tys[A.getArgNo() + 1])
            ValueDI.try_emplace(&A, Tys[A.getArgNo() + 1]);
    }
}

bool typeHasPointer(Type *T, unsigned Depth) {
  if (Depth > 16)
    return true;
  if (T->isPointerTy())
    return true;
  if (auto *ST = dyn_cast<StructType>(T)) {
    for (Type *E : ST->elements())
      if (typeHasPointer(E, Depth + 1))
        return true;
    return false;
  }
  if (auto *AT = dyn_cast<ArrayType>(T))
    return typeHasPointer(AT->getElementType(), Depth + 1);
  if (auto *VT = dyn_cast<VectorType>(T))
    return VT->getElementType()->isPointerTy();
  return false;
}

namespace {

enum class CallKind { Site, Ignore, Unmapped, Tail, ReturnsTwice, Fatal };

// Functions that never return and run no code of the program before the
// process ends (a fixed list, FORMAT.md "Calls without a map point"). A call
// of one has nothing live after it, so its record would be empty; left a
// plain call, identical call blocks (the file, line and message of an
// assert) merge again in BranchFolding, as in a plain build (jq: 704 -> 444
// calls of __assert_fail). A frame stopped at such a call has no map point
// there and is scanned conservatively. Not on the list, because code of the
// program runs after them or the frames below are needed: exit, quick_exit
// (atexit handlers; the leak check at exit reads the frames under exit),
// longjmp, siglongjmp, pthread_exit, __cxa_throw (they return elsewhere or
// run destructors and cleanup handlers).
bool isFatalCall(const CallBase &CB) {
  static const StringRef Fatal[] = {"__assert_fail", "__assert_perror_fail", "abort",
                                    "__stack_chk_fail", "__fortify_fail", "__chk_fail",
                                    "_exit", "_Exit"};
  const Function *Callee = CB.getCalledFunction();
  // A plain call (not an invoke) of the library function: declared here,
  // not defined (a program's own `abort` may run its code), and noreturn.
  if (!isa<CallInst>(CB) || !Callee || !Callee->isDeclaration() || !CB.doesNotReturn())
    return false;
  return is_contained(Fatal, Callee->getName());
}

// A call of a returns_twice function (setjmp, sigsetjmp, vfork): by its own
// attribute or by its callee's.
bool isReturnsTwice(const CallBase &CB) {
  if (CB.hasFnAttr(Attribute::ReturnsTwice))
    return true;
  const Function *Callee = CB.getCalledFunction();
  return Callee && Callee->hasFnAttribute(Attribute::ReturnsTwice);
}

// A `tail` call whose result (if any) is returned at once: nothing of the
// caller is live after it (`tail` also promises the callee does not touch
// the caller's stack), so it stays a plain call and the backend may turn it
// into a jump. Made a statepoint it could not, and the caller's frame would
// stay on the stack for nothing. If it is not made a jump, a frame stopped
// there holds nothing live: the tracer recognises the epilogue at the
// return address.
// The return may sit in a shared block behind a branch (and a phi of the
// results): CodeGenPrepare duplicates such returns to make tail calls.
bool isTailPosition(const CallInst &CI) {
  if (!CI.isTailCall())
    return false;
  const Instruction *Next = CI.getNextNode();
  const Value *Result = &CI;
  for (unsigned Hops = 0; Next && Hops < 4; ++Hops) {
    if (auto *Ret = dyn_cast<ReturnInst>(Next))
      return Ret->getNumOperands() == 0 || Ret->getOperand(0) == Result;
    auto *Br = dyn_cast<BranchInst>(Next);
    if (!Br || Br->isConditional())
      return false;
    const BasicBlock *From = Br->getParent(), *To = Br->getSuccessor(0);
    Next = &*To->getFirstNonPHIOrDbg();
    for (const PHINode &Phi : To->phis()) {
      // only a phi that carries the result on to the return
      if (Phi.getIncomingValueForBlock(From) != Result || !Phi.hasOneUse())
        return false;
      Result = &Phi;
    }
  }
  return false;
}

// Whether a value of type T is returned in the x87 stack (long double,
// complex long double, or an aggregate holding one): LLVM's statepoint
// lowering cannot carry such a result (gc.result of x86_fp80 becomes a call
// of address 0 at run time: Redis's strtold callers crashed), so such calls
// stay plain calls, counted as unmapped.
bool returnsInX87(Type *T) {
  if (T->isX86_FP80Ty())
    return true;
  if (auto *ST = dyn_cast<StructType>(T))
    return any_of(ST->elements(), returnsInX87);
  if (auto *AT = dyn_cast<ArrayType>(T))
    return returnsInX87(AT->getElementType());
  if (auto *VT = dyn_cast<VectorType>(T))
    return returnsInX87(VT->getElementType());
  return false;
}

// Intrinsics that are never calls at run time are ignored; those that may be
// lowered to a library call are counted as unmapped calls.
CallKind classifyCall(const CallBase &CB) {
  if (auto *II = dyn_cast<IntrinsicInst>(&CB)) {
    switch (II->getIntrinsicID()) {
    case Intrinsic::memcpy:
    case Intrinsic::memmove:
    case Intrinsic::memset:
    case Intrinsic::memcpy_inline:
    case Intrinsic::memset_inline:
      return CallKind::Unmapped;
    default:
      return CallKind::Ignore;
    }
  }
  if (const Function *F = CB.getCalledFunction(); F && F->isIntrinsic())
    return CallKind::Ignore;
  if (CB.isInlineAsm())
    return CallKind::Ignore; // not a call; functions with memory operands are skipped
  if (auto *CI = dyn_cast<CallInst>(&CB); CI && CI->isMustTailCall())
    return CallKind::Unmapped;
  if (CB.getNumOperandBundles() > 0)
    return CallKind::Unmapped;
  if (!isa<CallInst>(CB) && !isa<InvokeInst>(CB))
    return CallKind::Unmapped; // callbr
  // The returns_twice call itself stays a plain call: wrapped in a statepoint
  // it would lose the attribute, and with it the backend's care for such
  // functions (MachineFunction::exposesReturnsTwice: no stack slot colouring,
  // among others). A thread stopped inside setjmp sees this frame
  // scanned conservatively; every other call is a map point (see
  // addLongjmpEdges).
  if (isReturnsTwice(CB))
    return CallKind::ReturnsTwice;
  if (returnsInX87(CB.getType()))
    return CallKind::Unmapped;
  if (isFatalCall(CB))
    return CallKind::Fatal;
  if (auto *CI = dyn_cast<CallInst>(&CB); CI && isTailPosition(*CI))
    return CallKind::Tail;
  // Argument conventions a statepoint cannot carry.
  for (unsigned I = 0; I < CB.arg_size(); ++I)
    if (CB.paramHasAttr(I, Attribute::InAlloca) || CB.paramHasAttr(I, Attribute::Preallocated) ||
        CB.paramHasAttr(I, Attribute::SwiftError))
      return CallKind::Unmapped;
  return CallKind::Site;
}

const char *skipReason(Function &F) {
  if (F.hasGC())
    return "function has a gc strategy";
  if (F.hasFnAttribute(Attribute::Naked))
    return "naked function";
  if (F.hasFnAttribute(Attribute::PresplitCoroutine))
    return "unsplit coroutine";
  if (F.hasPersonalityFn()) {
    StringRef P = F.getPersonalityFn()->stripPointerCasts()->getName();
    if (P != "__gxx_personality_v0" && P != "rust_eh_personality" &&
        P != "__gcc_personality_v0")
      return "unsupported personality function";
  }
  // Computed goto (indirectbr) needs nothing special: calls become
  // statepoints in place and no edge is split (an invoke's new normal
  // destination sits on the invoke's own edge, never an indirectbr's).
  for (BasicBlock &BB : F) {
    if (BB.isEHPad() && !BB.isLandingPad())
      return "funclet-based exception handling";
    for (Instruction &I : BB) {
      auto *CB = dyn_cast<CallBase>(&I);
      if (!CB)
        continue;
      if (isa<CallBrInst>(CB))
        return "asm goto (callbr)";
      // (returns_twice callers are instrumented: see addLongjmpEdges)
      // Inline asm that reads or writes memory through operands (an "=*m"
      // output, a "*m" input) may move pointers where no map can see them.
      // A mere "memory" clobber (a compiler barrier, Rust's black_box) does
      // not: such asm is no call and is left alone.
      if (auto *IA = dyn_cast<InlineAsm>(CB->getCalledOperand()))
        for (const InlineAsm::ConstraintInfo &C : IA->ParseConstraints())
          if (C.isIndirect)
            return "inline asm with memory operands";
      if (auto *SP = dyn_cast<CallBase>(CB);
          SP && SP->getIntrinsicID() == Intrinsic::experimental_gc_statepoint)
        return "already has statepoints";
    }
  }
  return nullptr;
}

bool isStaticAllocaOf(const Value *V) {
  if (!V->getType()->isPointerTy())
    return false;
  const Value *U = getUnderlyingObject(V, 12);
  auto *AI = dyn_cast<AllocaInst>(U);
  return AI && AI->isStaticAlloca();
}

// The values a pointer may take its object from: a walk through phis,
// selects, casts and inbounds GEPs (a GEP that is not inbounds may compute any
// address, e.g. under clang's -fwrapv-pointer). Fills Leaves with the distinct
// other values reached (null and undef left out) and, if asked, Joins with the
// phis and selects passed; false if the walk takes more than 64 steps.
bool inboundsLeaves(const Value *V, SmallVectorImpl<const Value *> &Leaves,
                    SmallVectorImpl<const Instruction *> *Joins = nullptr) {
  SmallPtrSet<const Value *, 8> Seen;
  SmallVector<const Value *, 8> Work{V};
  unsigned Budget = 64;
  while (!Work.empty()) {
    if (!Budget--)
      return false;
    const Value *X = Work.pop_back_val()->stripInBoundsOffsets();
    if (!Seen.insert(X).second)
      continue;
    if (auto *P = dyn_cast<PHINode>(X)) {
      if (Joins)
        Joins->push_back(P);
      for (const Value *In : P->incoming_values())
        Work.push_back(In);
    } else if (auto *S = dyn_cast<SelectInst>(X)) {
      if (Joins)
        Joins->push_back(S);
      Work.push_back(S->getTrueValue());
      Work.push_back(S->getFalseValue());
    } else if (!isa<ConstantPointerNull>(X) && !isa<UndefValue>(X)) {
      Leaves.push_back(X);
    }
  }
  return true;
}

// A pointer whose every possible object is a function or a global variable
// other than a thread-local points into the binary's static image, never into
// the heap or a stack: like a pointer to a static alloca, it is no root and is
// not recorded (FORMAT.md §1). Typical are a comparison function chosen by a
// select, kept in a register across a loop of calls (SQLite's xRecordCompare),
// and &table[i] of a static table.
bool pointsToStaticOnly(const Value *V) {
  if (!V->getType()->isPointerTy() || V->getType()->getPointerAddressSpace() != 0)
    return false;
  SmallVector<const Value *, 4> Leaves;
  if (!inboundsLeaves(V, Leaves))
    return false;
  return all_of(Leaves, [](const Value *X) {
    auto *GV = dyn_cast<GlobalVariable>(X);
    return isa<Function>(X) || (GV && !GV->isThreadLocal());
  });
}

bool isByteArray(Type *T) {
  auto *AT = dyn_cast<ArrayType>(T);
  return AT && AT->getElementType()->isIntegerTy(8);
}

// How one instruction touches one candidate slot.
struct SlotEffect {
  BitVector Gen, Kill, ReadByCall;
};

class FunctionAnalyzer {
public:
  FunctionAnalyzer(Function &F, LoopInfo &LI, CycleInfo &CI, DominatorTree &DT, FunctionMapInfo &R)
      : F(F), LI(LI), CI(CI), DT(DT), R(R), DL(F.getParent()->getDataLayout()) {}
  void run();

private:
  void collectDebugTypes();
  void collectValues();
  void collectSlots();
  void slotUses(unsigned SlotIdx, AllocaInst *AI);
  void solveValues();
  void solveSlots();
  void record();
  bool isSiteOrLoop(Instruction *I) const;
  const char *addLongjmpEdges();
  void liveAfter(Instruction *S, BitVector &Vals, BitVector &Slots);
  MapEntry valueEntry(Value *V);
  Value *cursorBase(Value *V) const;

  Function &F;
  LoopInfo &LI;
  CycleInfo &CI; // cycles, irreducible ones too (LoopInfo has natural loops only)
  DominatorTree &DT;
  FunctionMapInfo &R;
  const DataLayout &DL;

  // Values.
  DenseMap<Value *, unsigned> ValIdx;
  std::vector<Value *> Vals;
  // Vals[I] == Vals[BaseOf[I]] + OffOf[I] (a constant-offset GEP/cast chain
  // from another tracked pointer), or BaseOf[I] == -1.
  std::vector<int> BaseOf;
  std::vector<int64_t> OffOf;
  std::vector<int> CoveredBy;
  DenseMap<BasicBlock *, BitVector> LiveOut, LiveIn, UE, Def, PhiDefs;
  // Slots.
  std::vector<AllocaInst *> SlotAllocas;
  DenseMap<AllocaInst *, unsigned> SlotIdx;
  std::vector<bool> SlotEscaped;
  DenseMap<Instruction *, BitVector> SGen, SKill, SCallRead;
  DenseMap<BasicBlock *, BitVector> SLiveOut;
  DenseMap<Instruction *, BitVector> InLifetime; // at each call site, escaped slots only
  DenseMap<BasicBlock *, BitVector> InLifetimeAtHeader; // at loop points
  void solveLifetimes();
  // Debug types.
  DenseMap<Value *, const DIType *> ValueDI;
  DenseMap<AllocaInst *, const DILocalVariable *> AllocaVar;
  // Sites.
  DenseMap<Instruction *, unsigned> CallSiteIdx;
  DenseMap<BasicBlock *, unsigned> LoopHeaderIdx;
  // returns_twice calls, and what their second return needs at each call
  // site reachable from them (the "longjmp edges", see addLongjmpEdges)
  std::vector<Instruction *> RetTwice;
  DenseMap<Instruction *, BitVector> ExtraVals, ExtraSlots;
};

void FunctionAnalyzer::collectDebugTypes() { collectValueTypes(F, ValueDI, &AllocaVar); }

void FunctionAnalyzer::collectValues() {
  auto Track = [&](Value *V) {
    if (!(V->getType()->isPointerTy() || aggregatePointerCount(V->getType())) ||
        isStaticAllocaOf(V) || pointsToStaticOnly(V))
      return;
    ValIdx[V] = Vals.size();
    Vals.push_back(V);
  };
  for (Argument &A : F.args())
    Track(&A);
  for (BasicBlock &BB : F)
    for (Instruction &I : BB)
      Track(&I);
  // A pointer that is another tracked pointer plus a constant (LICM hoists
  // such field addresses out of loops by the dozen) is recorded as DERIVED
  // from it: a constant in the map, no register and no spill at run time.
  BaseOf.assign(Vals.size(), -1);
  OffOf.assign(Vals.size(), 0);
  for (unsigned I = 0; I < Vals.size(); ++I) {
    Value *V = Vals[I];
    auto *PT = dyn_cast<PointerType>(V->getType());
    if (!PT || PT->getAddressSpace() != 0)
      continue;
    APInt Off(DL.getIndexTypeSizeInBits(PT), 0);
    Value *B = const_cast<Value *>(
        V->stripAndAccumulateConstantOffsets(DL, Off, /*AllowNonInbounds=*/true));
    if (B == V || !B->getType()->isPointerTy() || B->getType()->getPointerAddressSpace() != 0 ||
        Off.getSignificantBits() > 64)
      continue;
    if (auto It = ValIdx.find(B); It != ValIdx.end()) {
      BaseOf[I] = It->second;
      OffOf[I] = Off.getSExtValue();
    }
  }
  // An inbounds GEP with variable indices points into the object its base
  // points into (anything else is poison): where the base is recorded, the
  // object is reached through it, and the interior pointer is not stored.
  // The same holds for a phi or select all of whose incoming values are such
  // GEPs of one base or the phi itself (a cursor walking an array, like
  // SQLite's pOp over aOp), provided the base is not redefined in a loop
  // around the phi (else the phi could still hold the previous object's
  // pointer): a cycle, irreducible ones included.
  CoveredBy.assign(Vals.size(), -1);
  for (unsigned I = 0; I < Vals.size(); ++I) {
    if (BaseOf[I] >= 0)
      continue;
    Value *B = nullptr;
    if (isa<GetElementPtrInst>(Vals[I]))
      B = Vals[I]->stripInBoundsOffsets();
    else if (isa<PHINode>(Vals[I]) || isa<SelectInst>(Vals[I]))
      B = cursorBase(Vals[I]);
    // (the base in the default address space: an x86 __ptr32 base is 32-bit)
    if (B && B != Vals[I] && B->getType()->isPointerTy() &&
        B->getType()->getPointerAddressSpace() == 0)
      if (auto It = ValIdx.find(B); It != ValIdx.end())
        CoveredBy[I] = It->second;
  }
}

Value *FunctionAnalyzer::cursorBase(Value *V) const {
  SmallVector<const Value *, 4> Leaves;
  SmallVector<const Instruction *, 8> Joins;
  if (!inboundsLeaves(V, Leaves, &Joins) || Leaves.size() != 1)
    return nullptr;
  const Value *Base = Leaves[0];
  if (auto *BI = dyn_cast<Instruction>(Base))
    for (const Instruction *J : Joins)
      for (const CycleInfo::CycleT *C = CI.getCycle(J->getParent()); C; C = C->getParentCycle())
        if (C->contains(BI->getParent()))
          return nullptr;
  return const_cast<Value *>(Base);
}

// Walk the uses of a slot's address (through GEPs and casts) and note, per
// instruction, whether it reads (gen), overwrites all of it (kill), or lets
// the address escape.
void FunctionAnalyzer::slotUses(unsigned S, AllocaInst *AI) {
  uint64_t Size = AI->getAllocationSize(DL).value_or(TypeSize::getFixed(0)).getFixedValue();
  unsigned N = SlotAllocas.size();
  auto Gen = [&](Instruction *I) {
    auto &B = SGen[I];
    if (B.empty()) B.resize(N);
    B.set(S);
  };
  auto Kill = [&](Instruction *I) {
    auto &B = SKill[I];
    if (B.empty()) B.resize(N);
    B.set(S);
  };
  auto CallRead = [&](Instruction *I) {
    auto &B = SCallRead[I];
    if (B.empty()) B.resize(N);
    B.set(S);
    Gen(I);
  };
  SmallVector<std::pair<Value *, bool>, 16> Work{{AI, true}}; // (address, is the base)
  SmallPtrSet<Value *, 16> Seen;
  unsigned Budget = 4096;
  while (!Work.empty() && Budget--) {
    auto [Addr, IsBase] = Work.pop_back_val();
    if (!Seen.insert(Addr).second)
      continue;
    for (Use &U : Addr->uses()) {
      auto *I = dyn_cast<Instruction>(U.getUser());
      if (!I)
        continue;
      if (auto *LI = dyn_cast<LoadInst>(I)) {
        Gen(LI);
      } else if (auto *SI = dyn_cast<StoreInst>(I)) {
        if (U.getOperandNo() == 0) { // the address itself is stored
          SlotEscaped[S] = true;
          continue;
        }
        if (IsBase && DL.getTypeStoreSize(SI->getValueOperand()->getType()) >= Size)
          Kill(SI);
      } else if (isa<GetElementPtrInst>(I) || isa<BitCastInst>(I) ||
                 isa<AddrSpaceCastInst>(I)) {
        bool Base = false;
        if (auto *G = dyn_cast<GetElementPtrInst>(I))
          Base = IsBase && G->hasAllZeroIndices();
        Work.push_back({I, Base});
      } else if (auto *II = dyn_cast<IntrinsicInst>(I)) {
        switch (II->getIntrinsicID()) {
        case Intrinsic::lifetime_start:
        case Intrinsic::lifetime_end:
          Kill(II);
          break;
        case Intrinsic::memset:
        case Intrinsic::memcpy:
        case Intrinsic::memmove:
        case Intrinsic::memcpy_inline:
        case Intrinsic::memset_inline: {
          auto *MI = cast<MemIntrinsic>(II);
          if (U.getOperandNo() == 0) {
            auto *Len = dyn_cast<ConstantInt>(MI->getLength());
            if (IsBase && Len && Len->getZExtValue() >= Size && !(isa<MemTransferInst>(MI) && cast<MemTransferInst>(MI)->getRawSource() == Addr))
              Kill(II);
          } else {
            Gen(II);
          }
          break;
        }
        default:
          if (II->isDroppable() || isa<DbgInfoIntrinsic>(II))
            break;
          Gen(II);
          SlotEscaped[S] = true;
          break;
        }
      } else if (auto *CB = dyn_cast<CallBase>(I)) {
        CallRead(CB);
        if (!CB->isArgOperand(&U) || !CB->doesNotCapture(CB->getArgOperandNo(&U)))
          SlotEscaped[S] = true;
      } else {
        // ptrtoint, phi, select, ret, icmp of the address…: be conservative.
        if (!isa<ICmpInst>(I))
          SlotEscaped[S] = true;
      }
    }
  }
  if (Budget == 0 || Budget > 4096)
    SlotEscaped[S] = true;
}

void FunctionAnalyzer::collectSlots() {
  for (Instruction &I : F.getEntryBlock()) {
    auto *AI = dyn_cast<AllocaInst>(&I);
    if (!AI || !AI->isStaticAlloca())
      continue;
    auto Sz = AI->getAllocationSize(DL);
    if (!Sz || Sz->isScalable() || Sz->getFixedValue() < 8)
      continue;
    const DILocalVariable *Var = AllocaVar.lookup(AI);
    const DIType *DT = Var ? Var->getType() : nullptr;
    // Does it hold pointers? Debug info says so, or its IR type, or a pointer
    // is stored into it; untyped byte buffers without debug info whose
    // address escapes or that are copied into count as maybe-pointers.
    bool Holds = typeHasPointer(AI->getAllocatedType());
    bool StoresPtr = false, Copied = false, CopiedInto = false, Escapes = false;
    SmallVector<Value *, 8> W{AI};
    SmallPtrSet<Value *, 8> Seen;
    while (!W.empty() && Seen.size() < 256) {
      Value *A = W.pop_back_val();
      if (!Seen.insert(A).second)
        continue;
      for (User *U : A->users()) {
        if (auto *SI = dyn_cast<StoreInst>(U)) {
          if (SI->getValueOperand() == A)
            Escapes = true;
          else if (typeHasPointer(SI->getValueOperand()->getType()))
            StoresPtr = true;
        } else if (isa<GetElementPtrInst>(U) || isa<BitCastInst>(U)) {
          W.push_back(U);
        } else if (auto *MT = dyn_cast<MemTransferInst>(U)) {
          Copied = true;
          if (MT->getRawDest() == A)
            CopiedInto = true;
        } else if (auto *CB = dyn_cast<CallBase>(U)) {
          if (!isa<IntrinsicInst>(CB))
            Escapes = true;
        } else if (!isa<LoadInst>(U) && !isa<IntrinsicInst>(U)) {
          Escapes = true;
        }
      }
    }
    bool DIHasPtr = false, DIKnown = false;
    if (DT) {
      // Walk the DI type cheaply: any pointer member anywhere?
      SmallVector<const DIType *, 16> Q{DT};
      SmallPtrSet<const DIType *, 16> S;
      DIKnown = true;
      while (!Q.empty() && S.size() < 512) {
        const DIType *T = Q.pop_back_val();
        if (!T || !S.insert(T).second)
          continue;
        if (auto *D = dyn_cast<DIDerivedType>(T)) {
          unsigned Tag = D->getTag();
          if (Tag == dwarf::DW_TAG_pointer_type || Tag == dwarf::DW_TAG_reference_type ||
              Tag == dwarf::DW_TAG_rvalue_reference_type) {
            DIHasPtr = true;
            break;
          }
          Q.push_back(D->getBaseType());
        } else if (auto *C = dyn_cast<DICompositeType>(T)) {
          if (C->isForwardDecl())
            DIHasPtr = true;
          Q.push_back(C->getBaseType());
          for (const DINode *E : C->getElements())
            if (auto *ET = dyn_cast_or_null<DIType>(E))
              Q.push_back(ET);
        }
      }
    }
    // A type may let the tracer skip a word only where the program provably
    // never puts a pointer there. Bytes copied into the slot (memcpy/memmove:
    // SQLite's sqlite3NestedParse saves pointer fields into `char saveBuf[]`)
    // or written through its escaped address by code the pass cannot see may
    // be pointers whatever the declared type: such a slot is recorded and all
    // its words are STORED (scanned conservatively), unless its type already
    // says it holds pointers.
    bool Bytes = isByteArray(AI->getAllocatedType());
    bool Foreign = CopiedInto || Escapes || (!DIKnown && Copied && Bytes);
    bool Typed = DIKnown ? (DIHasPtr || StoresPtr) : (Holds || StoresPtr);
    bool May = Typed || Foreign;
    if (!May)
      continue;
    SlotInfo SI;
    SI.AllStored = !Typed || (!DIKnown && Bytes);
    SI.AI = AI;
    SI.DI = DT;
    SI.Name = Var ? Var->getName().str() : AI->getName().str();
    SI.Size = Sz->getFixedValue();
    SlotIdx[AI] = SlotAllocas.size();
    SlotAllocas.push_back(AI);
    R.Slots.push_back(SI);
  }
  SlotEscaped.assign(SlotAllocas.size(), false);
  for (unsigned S = 0; S < SlotAllocas.size(); ++S)
    slotUses(S, SlotAllocas[S]);
}

bool FunctionAnalyzer::isSiteOrLoop(Instruction *I) const {
  return CallSiteIdx.count(I);
}

void FunctionAnalyzer::solveValues() {
  unsigned N = Vals.size();
  for (BasicBlock &BB : F) {
    BitVector U(N), D(N), P(N);
    for (Instruction &I : BB) {
      if (auto *Phi = dyn_cast<PHINode>(&I)) {
        if (auto It = ValIdx.find(Phi); It != ValIdx.end()) {
          D.set(It->second);
          P.set(It->second);
        }
        continue;
      }
      for (Value *Op : I.operands())
        if (auto It = ValIdx.find(Op); It != ValIdx.end() && !D.test(It->second))
          U.set(It->second);
      if (auto It = ExtraVals.find(&I); It != ExtraVals.end()) {
        BitVector E = It->second; // read by a second return of setjmp
        E.reset(D);
        U |= E;
      }
      if (auto It = ValIdx.find(&I); It != ValIdx.end())
        D.set(It->second);
    }
    UE[&BB] = std::move(U);
    Def[&BB] = std::move(D);
    PhiDefs[&BB] = std::move(P);
    LiveIn[&BB] = UE[&BB];
    LiveOut[&BB] = BitVector(N);
  }
  // Iterate in post order (successors first) until nothing changes.
  std::vector<BasicBlock *> PO;
  for (BasicBlock *BB : post_order(&F.getEntryBlock()))
    PO.push_back(BB);
  // Blocks unreachable from the entry still need sets (they can hold calls).
  for (BasicBlock &BB : F)
    if (std::find(PO.begin(), PO.end(), &BB) == PO.end())
      PO.insert(PO.begin(), &BB);
  bool Changed = true;
  for (unsigned Iter = 0; Changed && Iter < 10000; ++Iter) {
    Changed = false;
    for (BasicBlock *BB : PO) {
      BitVector Out(N);
      for (BasicBlock *S : successors(BB)) {
        BitVector In = LiveIn[S];
        In.reset(PhiDefs[S]);
        Out |= In;
        for (PHINode &Phi : S->phis()) {
          Value *V = Phi.getIncomingValueForBlock(BB);
          if (auto It = ValIdx.find(V); It != ValIdx.end())
            Out.set(It->second);
        }
      }
      BitVector In = Out;
      In.reset(Def[BB]);
      In |= UE[BB];
      if (Out != LiveOut[BB] || In != LiveIn[BB]) {
        LiveOut[BB] = std::move(Out);
        LiveIn[BB] = std::move(In);
        Changed = true;
      }
    }
  }
}

void FunctionAnalyzer::solveSlots() {
  unsigned N = SlotAllocas.size();
  if (!N)
    return;
  // An escaped slot may be read by any instruction that reads memory.
  BitVector EscapedSet(N);
  for (unsigned S = 0; S < N; ++S)
    if (SlotEscaped[S])
      EscapedSet.set(S);
  auto Transfer = [&](Instruction &I, BitVector &Live) {
    if (auto It = SKill.find(&I); It != SKill.end())
      Live.reset(It->second);
    if (auto It = SGen.find(&I); It != SGen.end())
      Live |= It->second;
    if (EscapedSet.any() && I.mayReadFromMemory() && !isa<IntrinsicInst>(I))
      Live |= EscapedSet;
    if (auto It = ExtraSlots.find(&I); It != ExtraSlots.end())
      Live |= It->second;
  };
  DenseMap<BasicBlock *, BitVector> In;
  for (BasicBlock &BB : F) {
    In[&BB] = BitVector(N);
    SLiveOut[&BB] = BitVector(N);
  }
  std::vector<BasicBlock *> PO;
  for (BasicBlock *BB : post_order(&F.getEntryBlock()))
    PO.push_back(BB);
  bool Changed = true;
  for (unsigned Iter = 0; Changed && Iter < 10000; ++Iter) {
    Changed = false;
    for (BasicBlock *BB : PO) {
      BitVector Out(N);
      for (BasicBlock *S : successors(BB))
        Out |= In[S];
      BitVector Live = Out;
      for (Instruction &I : reverse(*BB))
        Transfer(I, Live);
      if (Out != SLiveOut[BB] || Live != In[BB]) {
        SLiveOut[BB] = std::move(Out);
        In[BB] = std::move(Live);
        Changed = true;
      }
    }
  }
}

// Forward analysis for escaped slots: where may they hold something live?
// * A slot with lifetime markers: only where, on every path, it was written
//   (or its address handed out) after its lifetime.start and before any
//   lifetime.end (a must-analysis: intersection over predecessors). Stack
//   colouring lets slots with disjoint lifetimes share memory, and a union
//   would report several of them, with their types, at one address.
// * A slot without markers: from the first write or hand-out of its address
//   (every user of the address but loads) on any path (union); before that
//   it holds stale bytes, which must not be reported.
void FunctionAnalyzer::solveLifetimes() {
  unsigned N = SlotAllocas.size();
  if (!N)
    return;
  DenseMap<Instruction *, SmallVector<std::pair<int, bool>, 1>> Marker; // slot, enters
  BitVector HasMarkers(N);
  for (unsigned S = 0; S < N; ++S) {
    if (!SlotEscaped[S])
      continue;
    SmallVector<std::pair<Instruction *, bool>, 16> Events;
    SmallVector<Value *, 8> W{SlotAllocas[S]};
    SmallPtrSet<Value *, 8> Seen;
    while (!W.empty() && Seen.size() < 1024) {
      Value *A = W.pop_back_val();
      if (!Seen.insert(A).second)
        continue;
      for (User *U : A->users()) {
        auto *I = dyn_cast<Instruction>(U);
        if (!I || isa<LoadInst>(I))
          continue;
        if (isa<GetElementPtrInst>(I) || isa<BitCastInst>(I) || isa<AddrSpaceCastInst>(I)) {
          W.push_back(I);
          continue;
        }
        auto *II = dyn_cast<IntrinsicInst>(I);
        if (II && (II->getIntrinsicID() == Intrinsic::lifetime_start ||
                   II->getIntrinsicID() == Intrinsic::lifetime_end)) {
          HasMarkers.set(S);
          Events.push_back({I, false}); // fresh (stale bytes) or dead
        } else {
          Events.push_back({I, true});  // written or handed out
        }
      }
    }
    for (auto [I, Enters] : Events)
      Marker[I].push_back({(int)S, Enters});
  }
  BitVector MayMask(N); // escaped, no markers: union
  for (unsigned S = 0; S < N; ++S)
    if (SlotEscaped[S] && !HasMarkers.test(S))
      MayMask.set(S);
  ReversePostOrderTraversal<Function *> RPO(&F);
  DenseMap<BasicBlock *, BitVector> Out;
  DenseSet<BasicBlock *> Visited;
  auto Walk = [&](BasicBlock *BB, bool RecordSites) {
    BitVector May(N), Must(N);
    bool First = true;
    if (BB->isEntryBlock())
      First = false; // nothing is live on entry
    for (BasicBlock *P : predecessors(BB)) {
      if (!Visited.count(P))
        continue; // optimistic: unvisited predecessors are "all in"
      const BitVector &O = Out[P];
      May |= O;
      if (First) {
        Must = O;
        First = false;
      } else {
        Must &= O;
      }
    }
    BitVector L = May;
    L &= MayMask;
    BitVector M = Must;
    M.reset(MayMask);
    L |= M;
    if (RecordSites && LoopHeaderIdx.count(BB))
      InLifetimeAtHeader[BB] = L;
    for (Instruction &I : *BB) {
      if (auto It = Marker.find(&I); It != Marker.end())
        for (auto [S, Enters] : It->second) {
          if (Enters)
            L.set(S);
          else
            L.reset(S);
        }
      if (RecordSites && (CallSiteIdx.count(&I) || is_contained(RetTwice, &I)))
        InLifetime[&I] = L;
    }
    return L;
  };
  bool Changed = true;
  for (unsigned Iter = 0; Changed && Iter < 10000; ++Iter) {
    Changed = false;
    for (BasicBlock *BB : RPO) {
      BitVector L = Walk(BB, false);
      if (!Visited.count(BB) || L != Out[BB]) {
        Out[BB] = std::move(L);
        Visited.insert(BB);
        Changed = true;
      }
    }
  }
  for (BasicBlock &BB : F)
    Walk(&BB, true);
}

// The pointer values and slots live just after the returns_twice call S: a
// backward walk of S's block from its live-out set, with the same transfer
// as record().
void FunctionAnalyzer::liveAfter(Instruction *S, BitVector &VA, BitVector &SA) {
  BasicBlock *BB = S->getParent();
  unsigned NS = SlotAllocas.size();
  BitVector EscapedSet(NS);
  for (unsigned I = 0; I < NS; ++I)
    if (SlotEscaped[I])
      EscapedSet.set(I);
  VA = LiveOut[BB];
  SA = NS ? SLiveOut[BB] : BitVector();
  for (Instruction &I : reverse(*BB)) {
    if (&I == S)
      break;
    if (auto V = ValIdx.find(&I); V != ValIdx.end())
      VA.reset(V->second);
    for (Value *Op : I.operands())
      if (auto V = ValIdx.find(Op); V != ValIdx.end())
        VA.set(V->second);
    if (auto E = ExtraVals.find(&I); E != ExtraVals.end())
      VA |= E->second;
    if (NS) {
      if (auto K = SKill.find(&I); K != SKill.end())
        SA.reset(K->second);
      if (auto G = SGen.find(&I); G != SGen.end())
        SA |= G->second;
      if (auto E = ExtraSlots.find(&I); E != ExtraSlots.end())
        SA |= E->second;
    }
  }
  if (NS) {
    // escaped slots: the forward lifetime analysis decides, as at a call
    SA.reset(EscapedSet);
    BitVector Esc = EscapedSet;
    Esc &= InLifetime.lookup(S);
    SA |= Esc;
  }
}

// setjmp returns a second time when a call made after it (directly or deep
// in its callees) calls longjmp: the CFG has no edge for that. Every call
// site reachable from a returns_twice call S may be such a call, so what is
// live just after S is live across each of them too — an edge from every
// such call site back to S's continuation, added to both dataflows (values:
// an upward-exposed use at the site; slots: a read at the site) and solved
// again until nothing changes (several setjmps feed each other).
//
// Soundness (llvm_pass/README.md, "setjmp"): after longjmp the program reads
// its SSA values where the code generator kept them at S — callee-saved
// registers restored from the jmp_buf, or spill slots. A value made live
// across a later call site C (a statepoint operand) is kept by the register
// allocator until C and recorded at C, so the tracer finds it there while
// the program may still come back to S; an SSA value never changes, so it
// is the pointer the program will read. What C calls "indeterminate" (a
// non-volatile local changed between setjmp and longjmp) is a different SSA
// value, recorded where it is live.
// A value live after S that does not dominate a reachable site C (S in a
// loop, C reached around it) cannot be named at C: the function is skipped.
const char *FunctionAnalyzer::addLongjmpEdges() {
  // The call sites reachable from each returns_twice call.
  std::vector<SmallVector<Instruction *, 16>> Reach(RetTwice.size());
  for (unsigned K = 0; K < RetTwice.size(); ++K) {
    Instruction *S = RetTwice[K];
    BasicBlock *SB = S->getParent();
    for (Instruction *I = S->getNextNode(); I; I = I->getNextNode())
      if (CallSiteIdx.count(I))
        Reach[K].push_back(I);
    SmallPtrSet<BasicBlock *, 32> Seen;
    SmallVector<BasicBlock *, 32> Work(succ_begin(SB), succ_end(SB));
    while (!Work.empty()) {
      BasicBlock *B = Work.pop_back_val();
      if (!Seen.insert(B).second)
        continue;
      for (Instruction &I : *B)
        if (CallSiteIdx.count(&I) && !(B == SB && S->comesBefore(&I)))
          Reach[K].push_back(&I);
      append_range(Work, successors(B));
    }
  }
  unsigned NV = Vals.size(), NS = SlotAllocas.size();
  for (unsigned Round = 0; Round < 64; ++Round) {
    bool Changed = false;
    for (unsigned K = 0; K < RetTwice.size(); ++K) {
      BitVector VA, SA;
      liveAfter(RetTwice[K], VA, SA);
      for (Instruction *C : Reach[K]) {
        BitVector &EV = ExtraVals[C];
        if (EV.empty())
          EV.resize(NV);
        BitVector New = VA;
        New.reset(EV);
        for (int V = New.find_first(); V >= 0; V = New.find_next(V))
          if (auto *Def = dyn_cast<Instruction>(Vals[V]); Def && !DT.dominates(Def, C))
            return "calls a returns_twice function (setjmp), and a value live after it "
                   "does not dominate a later call";
        if (New.any()) {
          EV |= New;
          Changed = true;
        }
        if (NS) {
          BitVector &ES = ExtraSlots[C];
          if (ES.empty())
            ES.resize(NS);
          BitVector NewS = SA;
          NewS.reset(ES);
          if (NewS.any()) {
            ES |= NewS;
            Changed = true;
          }
        }
      }
    }
    if (!Changed)
      return nullptr;
    solveValues();
    solveSlots();
  }
  return "calls a returns_twice function (setjmp), and its liveness did not converge";
}

MapEntry FunctionAnalyzer::valueEntry(Value *V) {
  MapEntry E;
  E.V = V;
  E.DI = ValueDI.lookup(V);
  if (!E.DI) {
    // Fallback: a GEP that indexes V as a named struct names its pointee.
    for (User *U : V->users())
      if (auto *G = dyn_cast<GetElementPtrInst>(U))
        if (G->getPointerOperand() == V)
          if (auto *ST = dyn_cast<StructType>(G->getSourceElementType()); ST && ST->hasName()) {
            E.IRFallback = ST;
            break;
          }
  }
  return E;
}

void FunctionAnalyzer::record() {
  unsigned NS = SlotAllocas.size();
  BitVector EscapedSet(NS);
  for (unsigned S = 0; S < NS; ++S)
    if (SlotEscaped[S])
      EscapedSet.set(S);
  for (BasicBlock &BB : F) {
    BitVector Live = LiveOut[&BB];
    BitVector SLive = NS ? SLiveOut[&BB] : BitVector();
    auto Emit = [&](MapSite &Site, const BitVector &VL, const BitVector &SL) {
      // Live pointers derived from one base: stored once, as the base (which
      // is live anyway, or made live here when that replaces two or more
      // stored pointers), the rest as DERIVED constants.
      SmallDenseMap<int, SmallVector<int, 4>, 8> Derived;
      for (int I = VL.find_first(); I >= 0; I = VL.find_next(I))
        if (BaseOf[I] >= 0)
          Derived[BaseOf[I]].push_back(I);
      SmallDenseMap<int, int, 8> EntryOf;
      auto Value = [&](int I) {
        EntryOf[I] = Site.Entries.size();
        Site.Entries.push_back(valueEntry(Vals[I]));
      };
      for (int I = VL.find_first(); I >= 0; I = VL.find_next(I))
        if ((BaseOf[I] < 0 && !(CoveredBy[I] >= 0 && VL.test(CoveredBy[I]))) ||
            (BaseOf[I] >= 0 && !VL.test(BaseOf[I]) && Derived[BaseOf[I]].size() == 1))
          Value(I);
      for (auto &[B, Members] : Derived) {
        if (!VL.test(B) && Members.size() == 1)
          continue;
        // A base not live here, or live but left out as covered by another
        // pointer (an interior one): its derived pointers need it stored.
        if (!EntryOf.count(B))
          Value(B);
        for (int I : Members) {
          MapEntry E;
          E.V = Vals[I];
          E.DerivedFrom = EntryOf[B];
          E.Offset = OffOf[I];
          Site.Entries.push_back(E);
        }
      }
      for (int I = NS ? SL.find_first() : -1; I >= 0; I = SL.find_next(I)) {
        MapEntry E;
        E.IsSlot = true;
        E.V = SlotAllocas[I];
        E.DI = R.Slots[I].DI;
        E.AllStored = R.Slots[I].AllStored;
        if (!E.DI && (E.AllStored || !isByteArray(SlotAllocas[I]->getAllocatedType())))
          E.IRFallback = SlotAllocas[I]->getAllocatedType();
        Site.Entries.push_back(E);
      }
    };
    for (Instruction &I : reverse(BB)) {
      if (isa<PHINode>(I))
        break;
      if (auto It = CallSiteIdx.find(&I); It != CallSiteIdx.end()) {
        MapSite &Site = R.Calls[It->second];
        BitVector VL = Live;
        if (auto V = ValIdx.find(&I); V != ValIdx.end())
          VL.reset(V->second);
        if (auto E = ExtraVals.find(&I); E != ExtraVals.end())
          VL |= E->second;
        BitVector SL = SLive;
        if (NS) {
          // The callee may read a slot passed to it. An escaped slot counts
          // as read by every memory access, so the backward analysis has it
          // live almost everywhere: for those, the forward lifetime
          // analysis decides instead.
          if (auto C = SCallRead.find(&I); C != SCallRead.end())
            SL |= C->second;
          SL.reset(EscapedSet);
          BitVector Esc = EscapedSet;
          Esc &= InLifetime.lookup(&I);
          SL |= Esc;
          if (auto E = ExtraSlots.find(&I); E != ExtraSlots.end())
            SL |= E->second;
        }
        Emit(Site, VL, SL);
      }
      if (auto V = ValIdx.find(&I); V != ValIdx.end())
        Live.reset(V->second);
      for (Value *Op : I.operands())
        if (auto V = ValIdx.find(Op); V != ValIdx.end())
          Live.set(V->second);
      if (auto E = ExtraVals.find(&I); E != ExtraVals.end())
        Live |= E->second;
      if (NS) {
        if (auto K = SKill.find(&I); K != SKill.end())
          SLive.reset(K->second);
        if (auto G = SGen.find(&I); G != SGen.end())
          SLive |= G->second;
        if (EscapedSet.any() && I.mayReadFromMemory() && !isa<IntrinsicInst>(I))
          SLive |= EscapedSet;
        if (auto E = ExtraSlots.find(&I); E != ExtraSlots.end())
          SLive |= E->second;
      }
    }
    if (auto It = LoopHeaderIdx.find(&BB); It != LoopHeaderIdx.end()) {
      if (NS) {
        SLive.reset(EscapedSet);
        BitVector Esc = EscapedSet;
        Esc &= InLifetimeAtHeader.lookup(&BB);
        SLive |= Esc;
      }
      Emit(R.Loops[It->second], Live, SLive);
    }
  }
}

void FunctionAnalyzer::run() {
  if (const char *Why = skipReason(F)) {
    R.Skipped = true;
    R.Reason = Why;
    return;
  }
  // Call sites.
  bool CallsReturnsTwice = false;
  unsigned FatalCalls = 0;
  for (BasicBlock &BB : F)
    for (Instruction &I : BB)
      if (auto *CB = dyn_cast<CallBase>(&I); CB && isReturnsTwice(*CB))
        CallsReturnsTwice = true;
  for (BasicBlock &BB : F)
    for (Instruction &I : BB)
      if (auto *CB = dyn_cast<CallBase>(&I)) {
        CallKind K = classifyCall(*CB);
        // After setjmp, a call in tail position may still longjmp back into
        // this frame, which must then hold what setjmp's continuation reads
        // (LLVM neither marks nor makes tail calls in such functions).
        // Likewise a fatal call: abort runs a SIGABRT handler, which may
        // longjmp back into this frame.
        if ((K == CallKind::Tail || K == CallKind::Fatal) && CallsReturnsTwice)
          K = CallKind::Site;
        switch (K) {
        case CallKind::Ignore:
          break;
        case CallKind::Unmapped:
          ++R.Unmapped;
          break;
        case CallKind::Fatal:
          ++R.Unmapped;
          ++FatalCalls;
          break;
        case CallKind::Tail:
          ++R.TailCalls;
          break;
        case CallKind::ReturnsTwice:
          ++R.Unmapped;
          RetTwice.push_back(CB);
          break;
        case CallKind::Site: {
          CallSiteIdx[CB] = R.Calls.size();
          MapSite S;
          S.I = CB;
          R.Calls.push_back(S);
          if (CB->getFunctionType()->isVarArg())
            R.VarargCalls.push_back(CB);
          break;
        }
        }
      }
  // Loops with no mapped call get a point at their header, on request only
  // (MAPPEDTRACE_LOOP_POINTS=1, set by `mappedtrace cc --settle-points`):
  // only `snapshot --settle` steps threads to them, and they are not free. A
  // stackmap makes the x86 backend keep a frame pointer in the whole function
  // (one callee-saved register less) and pins values at the header: +47 %
  // instructions on a decompressor's main loop (issue #18).
  static const bool LoopPoints = [] {
    const char *E = std::getenv("MAPPEDTRACE_LOOP_POINTS");
    return E && E[0] && E[0] != '0';
  }();
  for (Loop *L : LoopPoints ? LI.getLoopsInPreorder() : SmallVector<Loop *, 4>()) {
    bool HasCall = false;
    for (BasicBlock *BB : L->blocks()) {
      for (Instruction &I : *BB)
        if (CallSiteIdx.count(&I)) {
          HasCall = true;
          break;
        }
      if (HasCall)
        break;
    }
    if (HasCall)
      continue;
    BasicBlock *H = L->getHeader();
    if (H->getFirstInsertionPt() == H->end() || H->isEHPad())
      continue;
    LoopHeaderIdx[H] = R.Loops.size();
    MapSite S;
    S.I = &*H->getFirstInsertionPt();
    S.LoopHeader = H;
    R.Loops.push_back(S);
  }
  collectDebugTypes();
  collectValues();
  collectSlots();
  solveValues();
  solveSlots();
  solveLifetimes();
  if (!RetTwice.empty())
    if (const char *Why = addLongjmpEdges()) {
      R = FunctionMapInfo();
      R.Skipped = true;
      R.Reason = Why;
      return;
    }
  record();
  if (R.Unmapped > RetTwice.size() + FatalCalls)
    R.Reason = StdReasons[0];
  else if (!RetTwice.empty())
    R.Reason = StdReasons[1];
  else if (FatalCalls)
    R.Reason = StdReasons[3];
}

} // namespace

FunctionMapInfo MappedTraceAnalysis::run(Function &F, FunctionAnalysisManager &FAM) {
  FunctionMapInfo R;
  if (!isCandidate(F))
    return R;
  LoopInfo &LI = FAM.getResult<LoopAnalysis>(F);
  CycleInfo &CI = FAM.getResult<CycleAnalysis>(F);
  DominatorTree &DT = FAM.getResult<DominatorTreeAnalysis>(F);
  FunctionAnalyzer(F, LI, CI, DT, R).run();
  return R;
}

} // namespace mappedtrace
