//===- PointerStores.cpp - pointers stored where the type says "no pointer" -===//
//
// A type may let the tracer skip a word only where the program provably never
// stores a pointer there (issue #11). This module-level scan finds the stores
// that break a declared layout and records the words as STORED slots
// (FORMAT.md §2), which the tracer scans conservatively:
//   * a pointer-typed `store` (or a vector/aggregate holding pointers);
//   * a `memcpy`/`memmove` whose source memory holds a pointer in the copied
//     bytes (by its debug type, or an alloca's IR type);
//   * an integer that comes from a `ptrtoint` (through integer arithmetic,
//     phis, selects, casts, calls to and returns from functions of this
//     module) and reaches a `store` or an atomic write: tagged pointers in
//     `uintptr_t` fields.
// The destination is resolved to (type, byte offset) through constant and
// variable GEPs, from the debug type of the base pointer (dbg.value, the
// signature, a dbg.declare'd alloca, a global's debug info, the field a base
// pointer was loaded from, or a GEP's named struct); the innermost struct or
// union holding that offset gets the mark. A scalar global gets its own type
// with STORED words (Emitter.cpp).
//
// Known imprecision (written where it arises below): a store through a pointer
// whose type cannot be resolved (a `void *` or `char *` base with no better
// hint) marks nothing; integer locals holding pointers are not stack roots.
// Bytes past a struct's declared size (flexible arrays, trailing data) need no
// mark: the tracer scans an object's tail conservatively anyway.
//
// The scan also counts the module's *untyped pointer writes* (the return
// value): pointer-carrying writes whose destination is not known to be a
// struct, union, array of them, pointer-typed memory (a `T **`), or a stack
// slot or global whose IR type holds pointers -- a destination of unknown type, or one typed as bytes or
// scalars (`char *`, `unsigned char *`, `uintptr_t *`). Only where every
// module of a program has none does the tracer skip the words of byte buffers
// proved by their allocation site (AllocSites.cpp BYTES, FORMAT.md §4).
// Known imprecision: a pointer copied by a function that receives its source
// as `void *` (`memcpy(dst, src, n)` inside `sdscatlen(s, &p, 8)`) is not
// seen: memory of unknown type is taken as pointer-free (as below).
//
// Run: as part of the `mappedtrace` pass (Emitter::run, before any type id).
//===----------------------------------------------------------------------===//
#include "MappedTrace.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/Analysis/ValueTracking.h"
#include "llvm/BinaryFormat/Dwarf.h"
#include "llvm/IR/DataLayout.h"
#include "llvm/IR/DebugInfo.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/Operator.h"
#include "llvm/Support/raw_ostream.h"
#include <cstdlib>

using namespace llvm;

namespace mappedtrace {

namespace {

static constexpr unsigned MaxResolveDepth = 6;
static constexpr unsigned MaxGEPChain = 32;
static constexpr unsigned MaxDIDepth = 16;
static constexpr size_t MaxWords = 4096;

/// Where an address points: into memory of debug type T at byte Off (Var:
/// plus an unknown offset), or into global G.
struct Loc {
  const DIType *T = nullptr;
  GlobalVariable *G = nullptr;
  uint64_t Off = 0;
  bool Var = false;
};

static bool isPtrTag(unsigned Tag) {
  return Tag == dwarf::DW_TAG_pointer_type || Tag == dwarf::DW_TAG_reference_type ||
         Tag == dwarf::DW_TAG_rvalue_reference_type;
}

static const DIType *pointee(const DIType *T) {
  auto *D = dyn_cast_or_null<DIDerivedType>(stripDI(T));
  if (!D || !isPtrTag(D->getTag()))
    return nullptr;
  return stripDI(D->getBaseType());
}

// (a typedef or qualifier node has size 0 in the metadata: the size of what it names)
static uint64_t sizeOf(const DIType *T) {
  T = stripDI(T);
  return T ? T->getSizeInBits() / 8 : 0;
}

class Finder {
public:
  Finder(Module &M, TypeTable &TT,
         std::map<GlobalVariable *, std::vector<std::pair<uint64_t, uint64_t>>> &Globals)
      : M(M), TT(TT), DL(M.getDataLayout()), Globals(Globals) {}

  /// Pointer-carrying writes to memory of unknown or byte/scalar type (see the banner).
  unsigned Untyped = 0;

  void run() {
    taint();
    for (Function &F : M) {
      if (F.isDeclaration())
        continue;
      ValueDI.clear();
      AllocaVar.clear();
      collectValueTypes(F, ValueDI, &AllocaVar);
      for (BasicBlock &BB : F)
        for (Instruction &I : BB)
          visit(I);
    }
  }

private:
  // ---- integers that carry a pointer (ptrtoint and what is computed from it)
  void taint() {
    SmallVector<Value *, 64> Work;
    auto Add = [&](Value *V) {
      if (V->getType()->isIntOrIntVectorTy() && Tainted.insert(V).second)
        Work.push_back(V);
    };
    for (Function &F : M)
      for (BasicBlock &BB : F)
        for (Instruction &I : BB)
          if (isa<PtrToIntInst>(I))
            Add(&I);
    // Each value enters the work list once: bounded by the module's size.
    while (!Work.empty()) {
      Value *V = Work.pop_back_val();
      for (User *U : V->users()) {
        auto *I = dyn_cast<Instruction>(U);
        if (!I)
          continue;
        if (auto *BO = dyn_cast<BinaryOperator>(I)) {
          if (keepsPointer(BO))
            Add(I);
        } else if (auto *CI = dyn_cast<CastInst>(I)) {
          // a cast to fewer than 64 bits cannot hold a pointer
          if (!isa<IntToPtrInst>(CI) && !isa<PtrToIntInst>(CI) &&
              CI->getType()->getScalarSizeInBits() >= 64)
            Add(I);
        } else if (isa<PHINode>(I) || isa<FreezeInst>(I)) {
          Add(I);
        } else if (auto *S = dyn_cast<SelectInst>(I)) {
          if (S->getCondition() != V)
            Add(S);
        } else if (auto *R = dyn_cast<ReturnInst>(I)) {
          // returned: every call of this function yields a tainted value
          for (User *CU : R->getFunction()->users())
            if (auto *CB = dyn_cast<CallBase>(CU); CB && CB->getCalledOperand() == R->getFunction())
              Add(CB);
        } else if (auto *CB = dyn_cast<CallBase>(I)) {
          Function *Callee = CB->getCalledFunction();
          if (!Callee || Callee->isDeclaration())
            continue;   // known imprecision: a library function's use is not followed
          for (unsigned A = 0; A < CB->arg_size() && A < Callee->arg_size(); ++A)
            if (CB->getArgOperand(A) == V)
              Add(Callee->getArg(A));
        }
      }
    }
  }

  /// Record a mark (MAPPEDTRACE_DEBUG_STORES=1: say which instruction made it).
  void addStored(const DICompositeType *C, uint64_t Off, uint64_t Len) {
    if (Debug && CurI) {
      errs() << "mappedtrace: stored " << C->getName() << "+" << Off << " len " << Len << " by "
             << CurI->getFunction()->getName() << ": ";
      CurI->print(errs());
      errs() << "\n";
    }
    TT.addStored(C, Off, Len);
  }

  /// Can the result of BO still be a (tagged) pointer?  Adding, subtracting,
  /// or-ing in or masking off tag bits keeps it; the difference of two
  /// pointers, a small mask (alignment tests), shifts, products and
  /// quotients (hashes) do not.
  bool keepsPointer(const BinaryOperator *BO) const {
    Value *A = BO->getOperand(0), *B = BO->getOperand(1);
    switch (BO->getOpcode()) {
    case Instruction::Add:
    case Instruction::Or:
    case Instruction::Xor:
      return !(Tainted.count(A) && Tainted.count(B));
    case Instruction::Sub:
      return Tainted.count(A) && !Tainted.count(B);
    case Instruction::And: {
      for (Value *Op : {A, B})
        if (auto *C = dyn_cast<ConstantInt>(Op))
          return C->getValue().getActiveBits() > 12; // p & 7: a tag test, p & ~7: the pointer
      return true;
    }
    default:
      return false;
    }
  }

  // ---- the stores
  void visit(Instruction &I) {
    CurI = &I;
    if (auto *S = dyn_cast<StoreInst>(&I)) {
      Value *V = S->getValueOperand();
      if (carriesPointer(V) && storeSize(V) >= 8) {
        countUntyped(S->getPointerOperand());
        if (!pointerLvalue(S))
          mark(S->getPointerOperand(), storeSize(V));
      }
    } else if (auto *RMW = dyn_cast<AtomicRMWInst>(&I)) {
      if (carriesPointer(RMW->getValOperand())) {
        countUntyped(RMW->getPointerOperand());
        mark(RMW->getPointerOperand(), storeSize(RMW->getValOperand()));
      }
    } else if (auto *X = dyn_cast<AtomicCmpXchgInst>(&I)) {
      if (carriesPointer(X->getNewValOperand())) {
        countUntyped(X->getPointerOperand());
        mark(X->getPointerOperand(), storeSize(X->getNewValOperand()));
      }
    } else if (auto *MT = dyn_cast<MemTransferInst>(&I)) {
      // a struct assignment (the front end describes the copied type with
      // !tbaa.struct) copies a layout onto itself: nothing to mark
      if (MT->getMetadata(LLVMContext::MD_tbaa_struct))
        return;
      auto *Len = dyn_cast<ConstantInt>(MT->getLength());
      uint64_t N = Len ? Len->getZExtValue() : UINT64_MAX;
      // a copy moves each pointer to the same relative place: mark those
      // words of the destination (a struct copied onto its own type marks
      // nothing); where the source's layout is not known exactly, all of it
      SmallVector<uint64_t, 8> Rel;
      switch (pointerWords(MT->getSource(), N, Rel)) {
      case Holds::None:
        break;
      case Holds::At: {
        countUntyped(MT->getDest());
        Loc L;
        if (resolve(MT->getDest(), L, 0))
          for (uint64_t R : Rel)
            markLoc(L, R, 8);
        break;
      }
      case Holds::Somewhere:
        countUntyped(MT->getDest());
        mark(MT->getDest(), N);
        break;
      }
    }
  }

  enum class Holds { None, At, Somewhere };

  /// Where the first N bytes of the memory at S hold pointers: at the offsets
  /// (relative to S) put in Rel, or somewhere (layout not known exactly).
  Holds pointerWords(Value *S, uint64_t N, SmallVectorImpl<uint64_t> &Rel) {
    APInt AOff(DL.getIndexTypeSizeInBits(S->getType()), 0);
    Value *U = S->stripAndAccumulateConstantOffsets(DL, AOff, /*AllowNonInbounds=*/true);
    if (auto *AI = dyn_cast<AllocaInst>(U); AI && !AOff.isNegative()) {
      SmallVector<uint64_t, 8> All;
      irPointerOffsets(AI->getAllocatedType(), 0, All, 0);
      uint64_t Lo = AOff.getZExtValue(), Hi = endOf(Lo, N);
      for (uint64_t O : All)
        if (O >= Lo && O < Hi && Rel.size() < MaxWords)
          Rel.push_back(O - Lo);
      return Rel.empty() ? Holds::None : Holds::At;
    }
    Loc L;
    if (!resolve(S, L, 0) || !L.T)
      return Holds::None; // known imprecision: memory of unknown type is taken as pointer-free
    if (L.Var)
      return diHasPointer(L.T, 0, UINT64_MAX, 0) ? Holds::Somewhere : Holds::None;
    // a copy of unknown length: the pointers of the source's declared part
    // (past it, the destination's tail is scanned by the tracer anyway)
    SmallVector<uint64_t, 8> All;
    uint64_t Hi = N == UINT64_MAX ? std::max(sizeOf(L.T), L.Off) : endOf(L.Off, N);
    // a copy of unknown length out of an array of scalars stays in it (C:
    // pointer arithmetic from a member array does not leave it):
    // raxIterator's key_static_string
    if (uint64_t E = N == UINT64_MAX ? scalarArrayEnd(L.T, L.Off, 0) : 0; E && E < Hi)
      Hi = E;
    diPointerOffsets(L.T, 0, L.Off, Hi, All, 0);
    for (uint64_t O : All)
      if (Rel.size() < MaxWords)
        Rel.push_back(O - L.Off);
    return Rel.empty() ? Holds::None : Holds::At;
  }

  /// The end of the member array of scalars of T that holds byte Off (nested
  /// structs followed), 0 if Off is in no such array.
  uint64_t scalarArrayEnd(const DIType *T, uint64_t Off, unsigned Depth) const {
    auto *C = dyn_cast_or_null<DICompositeType>(stripDI(T));
    if (!C || Depth > MaxDIDepth || C->getTag() != dwarf::DW_TAG_structure_type)
      return 0;
    for (const DINode *N : C->getElements()) {
      auto *Mem = dyn_cast_or_null<DIDerivedType>(N);
      if (!Mem || Mem->getTag() != dwarf::DW_TAG_member || Mem->isStaticMember() || Mem->isBitField())
        continue;
      uint64_t O = Mem->getOffsetInBits() / 8, S = sizeOf(Mem->getBaseType());
      if (Off < O || Off >= O + S)
        continue;
      auto *MC = dyn_cast_or_null<DICompositeType>(stripDI(Mem->getBaseType()));
      if (MC && MC->getTag() == dwarf::DW_TAG_array_type)
        return diHasPointer(MC, 0, UINT64_MAX, Depth + 1) ? 0 : O + S;
      uint64_t E = scalarArrayEnd(Mem->getBaseType(), Off - O, Depth + 1);
      return E ? O + E : 0;
    }
    return 0;
  }

  /// Offsets of the pointers in a value of IR type T laid at Base.
  void irPointerOffsets(Type *T, uint64_t Base, SmallVectorImpl<uint64_t> &Out, unsigned Depth) const {
    if (Depth > MaxDIDepth || Out.size() >= MaxWords)
      return;
    if (T->isPointerTy()) {
      Out.push_back(Base);
    } else if (auto *ST = dyn_cast<StructType>(T)) {
      const StructLayout *SL = DL.getStructLayout(ST);
      for (unsigned I = 0; I < ST->getNumElements(); ++I)
        irPointerOffsets(ST->getElementType(I), Base + SL->getElementOffset(I), Out, Depth + 1);
    } else if (auto *AT = dyn_cast<ArrayType>(T)) {
      if (!typeHasPointer(AT->getElementType()))
        return;
      uint64_t ES = DL.getTypeAllocSize(AT->getElementType());
      for (uint64_t I = 0; I < AT->getNumElements() && Out.size() < MaxWords; ++I)
        irPointerOffsets(AT->getElementType(), Base + I * ES, Out, Depth + 1);
    } else if (auto *VT = dyn_cast<FixedVectorType>(T); VT && VT->getElementType()->isPointerTy()) {
      for (unsigned I = 0; I < VT->getNumElements(); ++I)
        Out.push_back(Base + 8 * I);
    }
  }

  /// Offsets of the pointer members of debug type T (laid at Base) in [Lo, Hi).
  void diPointerOffsets(const DIType *T, uint64_t Base, uint64_t Lo, uint64_t Hi,
                        SmallVectorImpl<uint64_t> &Out, unsigned Depth) const {
    T = stripDI(T);
    if (!T || Depth > MaxDIDepth || Out.size() >= MaxWords || Base >= Hi)
      return;
    if (auto *D = dyn_cast<DIDerivedType>(T)) {
      if (isPtrTag(D->getTag()) && Base >= Lo)
        Out.push_back(Base);
      return;
    }
    auto *C = dyn_cast<DICompositeType>(T);
    if (!C || C->getTag() == dwarf::DW_TAG_enumeration_type)
      return;
    if (C->getTag() == dwarf::DW_TAG_array_type) {
      const DIType *E = stripDI(C->getBaseType());
      uint64_t ES = sizeOf(E), Size = sizeOf(C);
      if (!ES || !diHasPointer(E, 0, ES, Depth + 1))
        return;
      uint64_t First = Lo > Base ? (Lo - Base) / ES : 0;
      for (uint64_t I = First; I * ES < Size && Base + I * ES < Hi && Out.size() < MaxWords; ++I)
        diPointerOffsets(E, Base + I * ES, Lo, Hi, Out, Depth + 1);
      return;
    }
    for (const DINode *N : C->getElements()) {
      auto *Mem = dyn_cast_or_null<DIDerivedType>(N);
      if (!Mem || Mem->getTag() != dwarf::DW_TAG_member || Mem->isStaticMember() || Mem->isBitField())
        continue;
      uint64_t O = Base + Mem->getOffsetInBits() / 8, S = sizeOf(Mem->getBaseType());
      if (O < Hi && O + (S ? S : 8) > Lo)
        diPointerOffsets(Mem->getBaseType(), O, Lo, Hi, Out, Depth + 1);
    }
  }

  /// Does the store's TBAA access tag say the front end stores to a pointer
  /// lvalue ("any pointer", "p1 int", a vtable pointer)?  Then the memory is
  /// a pointer field whatever type the base pointer seems to have (a value
  /// described by variables of several types, after inlining). The front
  /// end emits TBAA only under strict aliasing, where storing through a
  /// pointer lvalue into an integer object is undefined; with
  /// -fno-strict-aliasing there is no tag and the resolved type decides.
  static bool pointerLvalue(const Instruction *I) {
    const MDNode *Tag = I->getMetadata(LLVMContext::MD_tbaa);
    if (!Tag || Tag->getNumOperands() < 2)
      return false;
    auto *Access = dyn_cast_or_null<MDNode>(Tag->getOperand(1));
    if (!Access || Access->getNumOperands() < 1)
      return false;
    auto *Name = dyn_cast_or_null<MDString>(Access->getOperand(0));
    if (!Name)
      return false;
    StringRef N = Name->getString();
    return N == "any pointer" || N == "vtable pointer" ||
           (N.size() > 3 && N[0] == 'p' && isdigit((unsigned char)N[1]) && N.contains(' '));
  }

  /// Bytes a store of V writes (a scalable vector: its known minimum).
  uint64_t storeSize(Value *V) const { return DL.getTypeStoreSize(V->getType()).getKnownMinValue(); }

  static uint64_t endOf(uint64_t Off, uint64_t Len) {
    return Len > UINT64_MAX - Off ? UINT64_MAX : Off + Len;
  }

  bool carriesPointer(Value *V) const {
    Type *T = V->getType();
    if (T->isPtrOrPtrVectorTy() || aggregatePointerCount(T))
      return !isa<ConstantPointerNull>(V) && !isa<Function>(V->stripPointerCasts());
    return Tainted.count(V);
  }

  /// Is there a pointer member of T overlapping bytes [Lo, Hi)?
  bool diHasPointer(const DIType *T, uint64_t Lo, uint64_t Hi, unsigned Depth) const {
    T = stripDI(T);
    if (!T || Depth > MaxDIDepth)
      return false;
    if (auto *D = dyn_cast<DIDerivedType>(T))
      return isPtrTag(D->getTag()) && Lo < 8;
    auto *C = dyn_cast<DICompositeType>(T);
    if (!C)
      return false;
    if (C->getTag() == dwarf::DW_TAG_array_type) {
      const DIType *E = stripDI(C->getBaseType());
      uint64_t ES = sizeOf(E);
      if (!ES)
        return false;
      // an element whose range overlaps: same layout in each, so check one period
      return diHasPointer(E, Lo % ES, Hi - Lo >= ES ? ES : Lo % ES + (Hi - Lo), Depth + 1);
    }
    for (const DINode *N : C->getElements()) {
      auto *Mem = dyn_cast_or_null<DIDerivedType>(N);
      if (!Mem || Mem->getTag() != dwarf::DW_TAG_member || Mem->isStaticMember())
        continue;
      uint64_t O = Mem->getOffsetInBits() / 8, S = sizeOf(Mem->getBaseType());
      if (O < Hi && (O + S > Lo || !S) &&
          diHasPointer(Mem->getBaseType(), Lo > O ? Lo - O : 0, Hi - O, Depth + 1))
        return true;
    }
    return false;
  }

  // ---- resolving an address to (debug type, offset)
  bool resolve(Value *A, Loc &L, unsigned Depth) {
    if (Depth > MaxResolveDepth)
      return false;
    int64_t Off = 0;
    bool Var = false;
    const DICompositeType *Hint = nullptr;
    Value *B = A;
    for (unsigned I = 0; I < MaxGEPChain; ++I) {
      B = B->stripPointerCasts();
      auto *G = dyn_cast<GEPOperator>(B);
      if (!G)
        break;
      SmallMapVector<Value *, APInt, 4> VarOffs;
      APInt C(DL.getIndexTypeSizeInBits(G->getType()), 0);
      if (!G->collectOffset(DL, C.getBitWidth(), VarOffs, C))
        return false;
      Off += C.getSExtValue();
      Var |= !VarOffs.empty();
      // a GEP over a named struct names its base's type (at -O0 and in
      // unoptimised code; optimised GEPs are mostly over i8)
      if (auto *ST = dyn_cast<StructType>(G->getSourceElementType()); ST && ST->hasName()) {
        StringRef N = ST->getName();
        for (StringRef P : {"struct.", "union.", "class."})
          if (N.consume_front(P))
            break;
        Hint = TT.byName(N);
      } else {
        Hint = nullptr;
      }
      B = G->getPointerOperand();
    }
    if (Off < 0)
      return false;
    L = Loc();
    L.Off = (uint64_t)Off;
    L.Var = Var;
    if (auto *GV = dyn_cast<GlobalVariable>(B)) {
      L.G = GV;
      SmallVector<DIGlobalVariableExpression *, 1> GVEs;
      GV->getDebugInfo(GVEs);
      for (auto *E : GVEs)
        if (E->getVariable() && E->getExpression()->getNumElements() == 0) {
          L.T = E->getVariable()->getType();
          break;
        }
      return true;
    }
    if (auto *AI = dyn_cast<AllocaInst>(B)) {
      if (const DILocalVariable *V = AllocaVar.lookup(AI))
        L.T = V->getType();
      return L.T != nullptr;
    }
    if (const DIType *PT = ValueDI.lookup(B))
      L.T = pointee(PT);
    if (!L.T)
      if (auto *LI = dyn_cast<LoadInst>(B)) {
        // the base was loaded from a field: that field's pointee type
        Loc From;
        if (resolve(LI->getPointerOperand(), From, Depth + 1) && From.T && !From.Var)
          L.T = pointee(fieldAt(From.T, From.Off));
      }
    if (!L.T && Hint)
      L.T = Hint;
    return L.T != nullptr;
  }

  /// The debug type of the member that starts at byte Off of T (nested).
  const DIType *fieldAt(const DIType *T, uint64_t Off, unsigned Depth = 0) const {
    T = stripDI(T);
    if (!T || Depth > MaxDIDepth)
      return nullptr;
    auto *C = dyn_cast<DICompositeType>(T);
    if (!C)
      return Off == 0 ? T : nullptr;
    if (C->getTag() == dwarf::DW_TAG_array_type) {
      const DIType *E = stripDI(C->getBaseType());
      uint64_t ES = sizeOf(E);
      return ES ? fieldAt(E, Off % ES, Depth + 1) : nullptr;
    }
    for (const DINode *N : C->getElements()) {
      auto *Mem = dyn_cast_or_null<DIDerivedType>(N);
      if (!Mem || Mem->getTag() != dwarf::DW_TAG_member || Mem->isStaticMember() || Mem->isBitField())
        continue;
      uint64_t O = Mem->getOffsetInBits() / 8, S = sizeOf(Mem->getBaseType());
      if (Off >= O && Off < O + S)
        if (const DIType *R = fieldAt(Mem->getBaseType(), Off - O, Depth + 1))
          return R;
    }
    return nullptr;
  }

  /// Count a pointer-carrying write to \p Addr unless its destination is
  /// typed memory: a struct, union or array of them, a pointer (`T **`), a
  /// stack slot or global whose IR type holds a pointer.
  void countUntyped(Value *Addr) {
    // a stack slot or global whose type holds pointers: a later copy out of
    // it is a copy from pointer-holding memory (counted where it lands); a
    // byte buffer on the stack (`char buf[16]`) is counted here
    Value *U = getUnderlyingObject(Addr, 32);
    if (auto *AI = dyn_cast<AllocaInst>(U); AI && typeHasPointer(AI->getAllocatedType()))
      return;
    if (auto *GV = dyn_cast<GlobalVariable>(U); GV && typeHasPointer(GV->getValueType()))
      return;
    SmallPtrSet<Value *, 16> Seen;
    Tri T = rootTyped(Addr, 0, Seen);
    if (T == Tri::Yes)
      return;
    if (T == Tri::Unknown) {
      // the root has no debug type: the address's own (a `raxNode **childfield`
      // computed from an untyped phi), or the lvalue's (TBAA)
      if (const DIType *PT = ValueDI.lookup(Addr); PT && typedMemory(pointee(PT)))
        return;
      if (CurI && tbaaTyped(CurI))
        return;
    }
    ++Untyped;
    if (Debug && CurI) {
      errs() << "mappedtrace: untyped pointer write by " << CurI->getFunction()->getName() << " (into "
             << (T == Tri::No ? "bytes" : "unknown") << "): ";
      CurI->print(errs());
      errs() << "\n";
    }
  }

  enum class Tri { No, Yes, Unknown };

  /// Is the memory at \p A typed, by the debug type of the pointer it is
  /// computed from (GEPs at any offset stripped: a byte buffer cast to a
  /// struct pointer in this function stays a byte buffer)? Phis and selects:
  /// every incoming value; a call: the callee's declared return type; a
  /// pointer loaded from a field: the field's pointee type.
  Tri rootTyped(Value *A, unsigned Depth, SmallPtrSetImpl<Value *> &Seen) {
    Value *B = A->stripPointerCasts();
    for (unsigned I = 0; I < MaxGEPChain; ++I) {
      auto *G = dyn_cast<GEPOperator>(B);
      if (!G)
        break;
      B = G->getPointerOperand()->stripPointerCasts();
    }
    if (Depth > MaxResolveDepth || !Seen.insert(B).second)
      return Depth > MaxResolveDepth ? Tri::Unknown : Tri::Yes; // a cycle: decided by the other inputs
    // (a `void *` says nothing of the memory: decided by the lvalue)
    auto By = [](const DIType *T) { return !T ? Tri::Unknown : typedMemory(T) ? Tri::Yes : Tri::No; };
    // every variable the root is the value of (`void *ctx` and `CallReply
    // *rep = ctx`): a byte or scalar view decides No, else a typed one Yes
    {
      SmallVector<DbgVariableRecord *, 4> DVRs;
      findDbgValues(B, DVRs);
      Tri R = Tri::Unknown;
      for (DbgVariableRecord *D : DVRs) {
        if (!D->getVariable() || D->getExpression()->getNumElements() != 0)
          continue;
        Tri T = By(pointee(D->getVariable()->getType()));
        if (T == Tri::No && pointee(D->getVariable()->getType()))
          return Tri::No;
        if (T == Tri::Yes)
          R = Tri::Yes;
      }
      if (R == Tri::Yes)
        return R;
    }
    if (const DIType *PT = ValueDI.lookup(B))
      return By(pointee(PT));
    if (auto *AI = dyn_cast<AllocaInst>(B)) {
      if (const DILocalVariable *V = AllocaVar.lookup(AI))
        return By(V->getType());
      return typeHasPointer(AI->getAllocatedType()) ? Tri::Yes : Tri::No;
    }
    if (auto *GV = dyn_cast<GlobalVariable>(B))
      return typeHasPointer(GV->getValueType()) ? Tri::Yes : Tri::No;
    if (auto *LI = dyn_cast<LoadInst>(B)) {
      Loc From;
      if (resolve(LI->getPointerOperand(), From, 0) && From.T && !From.Var)
        if (auto *F = dyn_cast_or_null<DIDerivedType>(stripDI(fieldAt(From.T, From.Off)));
            F && isPtrTag(F->getTag()))
          return By(pointee(F));
      return Tri::Unknown;
    }
    if (auto *CB = dyn_cast<CallBase>(B)) {
      // a fresh allocation stored into a field: the field's pointee type
      // (`ts->stack = zmalloc(n)`, a `void **`)
      for (User *U : CB->users())
        if (auto *SI = dyn_cast<StoreInst>(U); SI && SI->getValueOperand() == CB) {
          Loc To;
          if (resolve(SI->getPointerOperand(), To, 0) && To.T && !To.Var)
            if (auto *F = dyn_cast_or_null<DIDerivedType>(stripDI(fieldAt(To.T, To.Off)));
                F && isPtrTag(F->getTag()) && pointee(F))
              return By(pointee(F));
        }
      if (Function *F = CB->getCalledFunction())
        if (DISubprogram *SP = F->getSubprogram())
          if (auto *ST = SP->getType(); ST && ST->getTypeArray().size() > 0 && ST->getTypeArray()[0])
            return By(pointee(ST->getTypeArray()[0])); // (a `void *` allocator says nothing)
      return Tri::Unknown;
    }
    SmallVector<Value *, 4> In;
    if (auto *P = dyn_cast<PHINode>(B))
      In.append(P->incoming_values().begin(), P->incoming_values().end());
    else if (auto *S = dyn_cast<SelectInst>(B))
      In = {S->getTrueValue(), S->getFalseValue()};
    else
      return Tri::Unknown;
    Tri R = Tri::Yes;
    for (Value *V : In) {
      if (isa<ConstantPointerNull>(V) || isa<UndefValue>(V))
        continue;
      Tri T = rootTyped(V, Depth + 1, Seen);
      if (T == Tri::No)
        return Tri::No;
      if (T == Tri::Unknown)
        R = Tri::Unknown;
    }
    return R;
  }

  /// Does the access tag of \p I (struct-path TBAA, emitted under strict
  /// aliasing) say the front end writes a member of a struct or a pointer
  /// object? An address whose debug type is lost at -O2 (an inlined
  /// constructor's result) is then typed memory by its lvalue, as a resolved
  /// one is by its declared type. Known imprecision: an lvalue cast from a
  /// byte buffer in another function is believed, as a declared type is.
  static bool tbaaTyped(const Instruction *I) {
    const MDNode *Tag = I->getMetadata(LLVMContext::MD_tbaa);
    if (!Tag || Tag->getNumOperands() < 3)
      return false;
    auto *Base = dyn_cast_or_null<MDNode>(Tag->getOperand(0));
    auto *Access = dyn_cast_or_null<MDNode>(Tag->getOperand(1));
    if (!Base || !Access)
      return false;
    if (Base != Access)
      return true; // a member: the base is the enclosing struct's type node
    return pointerLvalue(I);
  }

  /// Memory of debug type T holds a declared layout (not bytes, not a scalar).
  static bool typedMemory(const DIType *T) {
    T = stripDI(T);
    if (auto *D = dyn_cast_or_null<DIDerivedType>(T))
      return isPtrTag(D->getTag());
    auto *C = dyn_cast_or_null<DICompositeType>(T);
    if (!C || C->getTag() == dwarf::DW_TAG_enumeration_type)
      return false;
    if (C->getTag() == dwarf::DW_TAG_array_type)
      return typedMemory(C->getBaseType());
    return true;
  }

  // ---- marking
  void mark(Value *Addr, uint64_t Len) {
    Loc L;
    if (!resolve(Addr, L, 0))
      return; // known imprecision: a destination of unknown type gets no mark
    markLoc(L, 0, Len);
  }

  /// Mark Len bytes at Delta past L.
  void markLoc(Loc L, uint64_t Delta, uint64_t Len) {
    L.Off = endOf(L.Off, Delta);
    const DIType *T = L.T ? stripDI(L.T) : nullptr;
    // an array of scalars is marked on its enclosing aggregate; at top level
    // only a global can carry a layout of its own
    const DIType *Elem = T;
    for (unsigned I = 0; I < MaxDIDepth; ++I)
      if (auto *AC = dyn_cast_or_null<DICompositeType>(Elem); AC && AC->getTag() == dwarf::DW_TAG_array_type)
        Elem = stripDI(AC->getBaseType());
      else
        break;
    auto *EC = dyn_cast_or_null<DICompositeType>(Elem);
    if (!EC || EC->getTag() == dwarf::DW_TAG_enumeration_type) {
      // a scalar (or pointer) variable: only globals can carry their own layout
      if (L.G && !(T && isa<DIDerivedType>(T) && isPtrTag(cast<DIDerivedType>(T)->getTag()))) {
        uint64_t Size = DL.getTypeAllocSize(L.G->getValueType());
        uint64_t Lo = L.Var ? 0 : L.Off, Hi = L.Var ? Size : std::min(Size, endOf(L.Off, Len));
        if (Lo < Hi)
          Globals[L.G].push_back({Lo, Hi});
      }
      return;
    }
    auto *C = cast<DICompositeType>(T);
    if (L.Var) {
      // A variable index goes into an array: the scalar arrays of C at or
      // after the known part of the offset may get the pointer (all of each);
      // a C with no array and no pointer gets it somewhere (all of C).
      // Known imprecision: with pointer arrays (or an array of C itself) the
      // store is taken to land on a pointer.
      if (!markScalarArrays(C, 0, L.Off, 0) && !diHasPointer(C, 0, UINT64_MAX, 0) && !hasArray(C, 0))
        addStored(C, 0, sizeOf(C));
      return;
    }
    markIn(C, L.Off, Len, 0);
  }

  /// Mark every array of scalars in C (at Base, nested structs too) that ends
  /// after From, on its innermost aggregate; true if there was one.
  bool markScalarArrays(const DICompositeType *C, uint64_t Base, uint64_t From, unsigned Depth) {
    if (Depth > MaxDIDepth || C->getTag() == dwarf::DW_TAG_array_type)
      return false;
    bool Any = false;
    for (const DINode *N : C->getElements()) {
      auto *Mem = dyn_cast_or_null<DIDerivedType>(N);
      if (!Mem || Mem->getTag() != dwarf::DW_TAG_member || Mem->isStaticMember())
        continue;
      uint64_t O = Mem->getOffsetInBits() / 8, S = sizeOf(Mem->getBaseType());
      if (Base + O + S <= From)
        continue;
      auto *MC = dyn_cast_or_null<DICompositeType>(stripDI(Mem->getBaseType()));
      if (!MC || MC->getTag() == dwarf::DW_TAG_enumeration_type)
        continue;
      if (MC->getTag() != dwarf::DW_TAG_array_type) {
        Any |= markScalarArrays(MC, Base + O, From, Depth + 1);
        continue;
      }
      auto *E = dyn_cast_or_null<DICompositeType>(stripDI(MC->getBaseType()));
      bool Scalar = !E || E->getTag() == dwarf::DW_TAG_enumeration_type;
      if (Scalar && !diHasPointer(MC, 0, UINT64_MAX, Depth + 1) && S) {
        addStored(C, O, S);
        Any = true;
      }
    }
    return Any;
  }

  bool hasArray(const DICompositeType *C, unsigned Depth) const {
    if (Depth > MaxDIDepth)
      return false;
    if (C->getTag() == dwarf::DW_TAG_array_type)
      return true;
    for (const DINode *N : C->getElements())
      if (auto *Mem = dyn_cast_or_null<DIDerivedType>(N); Mem && Mem->getTag() == dwarf::DW_TAG_member)
        if (auto *MC = dyn_cast_or_null<DICompositeType>(stripDI(Mem->getBaseType())))
          if (hasArray(MC, Depth + 1))
            return true;
    return false;
  }

  /// Mark bytes [Off, Off+Len) of C where C's declared layout has no pointer.
  void markIn(const DICompositeType *C, uint64_t Off, uint64_t Len, unsigned Depth) {
    if (Depth > MaxDIDepth)
      return;
    uint64_t Size = sizeOf(C);
    if (Off >= Size)
      return; // past the declared part: the tracer scans an object's tail anyway
    if (C->getTag() == dwarf::DW_TAG_array_type) {
      const DIType *E = stripDI(C->getBaseType());
      uint64_t ES = sizeOf(E);
      if (auto *EC = dyn_cast_or_null<DICompositeType>(E); EC && ES)
        markIn(EC, Off % ES, Len, Depth + 1);
      return; // an array of scalars: marked by the caller on the enclosing aggregate
    }
    // a pointer in some member (a union alternative too) at Off: a pointer word
    if (diHasPointer(C, Off, Off + 8, Depth))
      return;
    bool IsUnion = C->getTag() == dwarf::DW_TAG_union_type;
    uint64_t Hi = std::min(Size, endOf(Off, Len));
    bool Inner = false;
    for (const DINode *N : C->getElements()) {
      auto *Mem = dyn_cast_or_null<DIDerivedType>(N);
      if (!Mem || Mem->getTag() != dwarf::DW_TAG_member || Mem->isStaticMember())
        continue;
      uint64_t O = Mem->getOffsetInBits() / 8, S = sizeOf(Mem->getBaseType());
      if (!(Off >= O && Off < O + S))
        continue;
      const DIType *MT = stripDI(Mem->getBaseType());
      if (auto *D = dyn_cast_or_null<DIDerivedType>(MT); D && isPtrTag(D->getTag()))
        return; // a pointer field already (a union: some member is a pointer here)
      auto *MC = dyn_cast_or_null<DICompositeType>(MT);
      if (MC && MC->getTag() != dwarf::DW_TAG_enumeration_type) {
        const DIType *E = MC->getTag() == dwarf::DW_TAG_array_type ? stripDI(MC->getBaseType()) : MC;
        if (isa_and_nonnull<DICompositeType>(E) && cast<DICompositeType>(E)->getTag() != dwarf::DW_TAG_enumeration_type) {
          markIn(MC, Off - O, Len, Depth + 1);
          Inner = true;
          if (!IsUnion)
            return;
          continue;
        }
        // an array of scalars (char buf[64]): the bytes stored
        if (IsUnion)
          continue;
        addStored(C, Off, Hi - Off);
        return;
      }
      if (IsUnion)
        continue; // a scalar member of a union: marked below unless another covers it
      addStored(C, Off, Hi - Off);
      return;
    }
    if (!Inner) // padding, a union with no pointer member here, or a bit-field
      addStored(C, Off, Hi - Off);
  }

  Module &M;
  TypeTable &TT;
  const DataLayout &DL;
  std::map<GlobalVariable *, std::vector<std::pair<uint64_t, uint64_t>>> &Globals;
  DenseSet<Value *> Tainted;
  Instruction *CurI = nullptr;
  bool Debug = [] {
    const char *E = std::getenv("MAPPEDTRACE_DEBUG_STORES");
    return E && E[0] == '1';
  }();
  DenseMap<Value *, const DIType *> ValueDI;
  DenseMap<AllocaInst *, const DILocalVariable *> AllocaVar;
};

} // namespace

unsigned findPointerStores(Module &M, TypeTable &TT,
                           std::map<GlobalVariable *, std::vector<std::pair<uint64_t, uint64_t>>> &Globals) {
  Finder F(M, TT, Globals);
  F.run();
  return F.Untyped;
}

} // namespace mappedtrace
