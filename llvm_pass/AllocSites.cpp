//===- AllocSites.cpp - opt-in allocation sites (`mappedtrace cc --alloc-sites`) ===//
//
// With MAPPEDTRACE_ALLOC_SITES=1 (set by the driver's --alloc-sites) every
// direct call to malloc, calloc, realloc or aligned_alloc in the module
// becomes an *allocation site*:
//   * a 24-byte record in section `.mtsites` (FORMAT.md §4): the type the
//     result is used as (from the debug type of the variable or return value
//     it flows into; 0 when unknown), file, line, column, function, kind;
//   * the call asks for 8 more bytes, rounded: `malloc(n)` becomes
//     `malloc(M)`, M = max(24, m | 8) with m = align8(n) + 8 (the end of the
//     chunk glibc serves m with: no byte more), and when the result is not
//     null the word at offset m - 8 (past the n bytes the program asked for)
//     gets the *site word* (and the word at M - 8, when above it, a zero)
//         (p * 0xFFFFFFFF9E3779B1) ^ &record        (mod 2^64)
//     p the pointer malloc returned, &record the run-time address of the
//     site's record. No runtime library: the code is inlined at the call; a
//     constant size folds to five instructions (test, branch, imul with a
//     32-bit immediate, xor with the record's address, store).
// A site whose result is used only as pointer-free memory (bytes, sds's
// header struct) is flagged BYTES; the block header carries the module's
// untyped pointer writes (PointerStores.cpp), which decide whether the tracer
// may skip such objects' words. MAPPEDTRACE_ALLOC_SITES=compact leaves out
// the word where the chunk would grow (FORMAT.md §4 "Compact sites").
// The pointer returned is malloc's own, so memory freed or reallocated by code
// without the maps is freed correctly. Sizes that would overflow, realloc to
// 0 bytes and calloc overflow keep their original arguments (and get no word).
// The tracer finds the word at the end of a chunk, checks it against the
// chunk's address and the list of records (trace.py, allocsites.py).
//
// Run: MAPPEDTRACE_ALLOC_SITES=1 opt-22 -load-pass-plugin=MappedTracePass.so -passes=mappedtrace x.ll
//===----------------------------------------------------------------------===//
#include "MappedTrace.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/BinaryFormat/Dwarf.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/DebugInfoMetadata.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/Intrinsics.h"
#include "llvm/Transforms/Utils/BasicBlockUtils.h"
#include "llvm/Transforms/Utils/ModuleUtils.h"
#include <cstdlib>

using namespace llvm;

namespace mappedtrace {

namespace {

// KWrapper: a call to a wrapper named `--alloc-fn=NAME:wrapper`, any
// signature; its request is not changed (see "Wrapper calls" below).
enum SiteKind : uint8_t { KMalloc = 1, KCalloc = 2, KRealloc = 3, KAlignedAlloc = 4, KWrapper = 5 };
// Record flags (FORMAT.md §4).
enum : uint8_t {
  FReturned = 1,    // the function returns the site's result: an allocation wrapper
  FWrapperCall = 2, // the site calls a wrapper named by --alloc-fn
  FArray = 4,       // the request is a multiple of the type's size: an array of it
  FBytes = 8,       // the result is used only as pointer-free memory (bytes): `char *`, sds
};
// Block header flags (FORMAT.md §4).
enum : uint32_t {
  BWritesCounted = 1, // untyped_pointer_writes holds the module's count
};

// An odd multiplier that fits an imul's sign-extended 32-bit immediate (a
// full 64-bit constant costs a movabs more per allocation).
constexpr uint64_t SiteMix = 0xFFFFFFFF9E3779B1ULL;

// Wrapper calls (`--alloc-fn=NAME:wrapper`, FORMAT.md §4 "Typed wrappers").
// A padded site whose result its function returns, in a function that
// returns an untyped pointer (an allocator: Lua's l_alloc, SQLite's
// sqlite3MemMalloc, Redis's zmalloc) or in a named wrapper, leaves in a
// thread-local pair what it allocated: word 0 = its pointer c ^ HandoffMask,
// word 1 = the offset of its site word from c. The caller of a named
// wrapper gets p back; when c <= p < c + MaxWrapperOffset and p <= the site
// word's address, p lies in the block that site allocated and the site word
// is that block's padding (never the program's bytes): the caller writes its
// own word there, keyed with p instead of c, (p * K) ^ &record. The tracer
// tries the keys c + 8i, i < 8, for a wrapper call's record, which gives the
// object's offset in the chunk (SQLite: 8). No request changes size, so a
// wrapper whose free takes the size (Lua's luaM_free_) stays right.
// The mask keeps the pair from looking like a pointer to a conservative
// scanner (LeakSanitizer, `--roots conservative`): the user-space pointer c
// becomes a kernel-half value, and a cleared pair (0) gives c = HandoffMask,
// which no user pointer is within 64 bytes of.
constexpr uint64_t HandoffMask = 0xFFFFFFFFA5A5A5A5ULL; // a sign-extended imm32: no movabs
constexpr uint64_t MaxWrapperOffset = 64;
constexpr const char *HandoffName = "__mappedtrace_site_handoff";

struct Site {
  CallInst *CI;
  SiteKind Kind;
  uint8_t Flags = 0;
  uint64_t Type = 0;
  std::string File, Func;
  uint32_t Line = 0;
  uint16_t Col = 0;
  bool Handoff = false; // a padded site that leaves its block in the handoff pair
};

// MAPPEDTRACE_ALLOC_SITES=compact: a request is padded only where glibc serves
// the padded request with the chunk it would give the original one (the
// word fits malloc's slack); sizes 16k+1 .. 16k+8 above 16 get no word.
bool compactSites() {
  const char *E = std::getenv("MAPPEDTRACE_ALLOC_SITES");
  return E && StringRef(E) == "compact";
}

// Allocation wrappers named by the user (MAPPEDTRACE_ALLOC_FNS="name:kind,…",
// `mappedtrace cc --alloc-fn NAME[:KIND]`): called like malloc/calloc/realloc
// and freed without their size (their callers pad the request), or, KIND
// `wrapper`, of any signature (their callers type what a padded site inside
// allocated). A NAME ending in `*` names every function it is a prefix of.
struct Wrappers {
  StringMap<SiteKind> Exact;
  std::vector<std::pair<std::string, SiteKind>> Prefix;
  SiteKind find(StringRef N) const {
    if (auto It = Exact.find(N); It != Exact.end())
      return It->second;
    for (const auto &[P, K] : Prefix)
      if (N.starts_with(P))
        return K;
    return SiteKind(0);
  }
};

const Wrappers &wrappers() {
  static Wrappers W = [] {
    Wrappers Out;
    const char *E = std::getenv("MAPPEDTRACE_ALLOC_FNS");
    SmallVector<StringRef, 8> Parts;
    StringRef(E ? E : "").split(Parts, ',', -1, false);
    for (StringRef P : Parts) {
      auto [Name, K] = P.split(':');
      K = K.trim();
      SiteKind Kind = K == "calloc"    ? KCalloc
                      : K == "realloc" ? KRealloc
                      : K == "wrapper" ? KWrapper
                                       : KMalloc;
      Name = Name.trim();
      if (Name.empty())
        continue;
      if (Name.ends_with("*"))
        Out.Prefix.emplace_back(Name.drop_back().str(), Kind);
      else
        Out.Exact[Name] = Kind;
    }
    return Out;
  }();
  return W;
}

bool shapeOk(const CallInst *CI, SiteKind K) {
  unsigned NArgs = CI->arg_size();
  auto Int = [&](unsigned I) { return CI->getArgOperand(I)->getType()->isIntegerTy(64); };
  switch (K) {
  case KMalloc:
    return NArgs == 1 && Int(0);
  case KCalloc:
  case KAlignedAlloc:
    return NArgs == 2 && Int(0) && Int(1);
  case KRealloc:
    return NArgs == 2 && CI->getArgOperand(0)->getType()->isPointerTy() && Int(1);
  case KWrapper:
    return true;
  }
  return false;
}

SiteKind kindOf(const CallInst *CI, uint8_t &Flags) {
  const Function *F = CI->getCalledFunction();
  if (!F || !CI->getType()->isPointerTy())
    return SiteKind(0);
  StringRef N = F->getName();
  if (SiteKind W = wrappers().find(N)) {
    Flags |= FWrapperCall;
    if (W == KWrapper)
      return KWrapper; // any signature: nothing of it is changed
    return shapeOk(CI, W) ? W : SiteKind(0);
  }
  if (!F->isDeclaration())
    return SiteKind(0);
  unsigned NArgs = CI->arg_size();
  auto IntArgs = [&](unsigned K) {
    for (unsigned I = 0; I < K; ++I)
      if (!CI->getArgOperand(I)->getType()->isIntegerTy(64))
        return false;
    return true;
  };
  if (N == "malloc" && NArgs == 1 && IntArgs(1))
    return KMalloc;
  if (N == "calloc" && NArgs == 2 && IntArgs(2))
    return KCalloc;
  if (N == "realloc" && NArgs == 2 && CI->getArgOperand(0)->getType()->isPointerTy() &&
      CI->getArgOperand(1)->getType()->isIntegerTy(64))
    return KRealloc;
  if (N == "aligned_alloc" && NArgs == 2 && IntArgs(2))
    return KAlignedAlloc;
  return SiteKind(0);
}

// The debug type the result of \p CI is used as: a variable it is the value
// of (dbg.value), a stack variable it is stored into (dbg.declare'd alloca,
// -O0), or the return type of the function returning it.
const DIType *resultType(CallInst *CI, const DenseMap<Value *, const DIType *> &ValueDI,
                         const DenseMap<AllocaInst *, const DILocalVariable *> &AllocaVar) {
  if (auto It = ValueDI.find(CI); It != ValueDI.end())
    return It->second;
  for (User *U : CI->users()) {
    if (auto *SI = dyn_cast<StoreInst>(U); SI && SI->getValueOperand() == CI)
      if (auto *AI = dyn_cast<AllocaInst>(SI->getPointerOperand()))
        if (auto It = AllocaVar.find(AI); It != AllocaVar.end())
          return It->second->getType();
    if (isa<ReturnInst>(U))
      if (DISubprogram *SP = CI->getFunction()->getSubprogram())
        if (auto *ST = SP->getType(); ST && ST->getTypeArray().size() > 0)
          return ST->getTypeArray()[0];
  }
  return nullptr;
}

// Is \p V a multiple of \p Size by its form: a constant multiple, or a
// product or left shift by one (`n * sizeof(T)`, `n << 4`)?
bool multipleOf(const Value *V, uint64_t Size) {
  if (!Size)
    return false;
  auto Mult = [&](const Value *C) {
    auto *K = dyn_cast<ConstantInt>(C);
    return K && K->getBitWidth() <= 64 && K->getZExtValue() && K->getZExtValue() % Size == 0;
  };
  if (Mult(V))
    return true;
  // the product of an overflow-checked multiplication (`n * sizeof(T) < n`
  // tests become umul.with.overflow): Redis's _dictExpand
  if (auto *EV = dyn_cast<ExtractValueInst>(V); EV && EV->getNumIndices() == 1 && EV->getIndices()[0] == 0)
    if (auto *II = dyn_cast<IntrinsicInst>(EV->getAggregateOperand());
        II && II->getIntrinsicID() == Intrinsic::umul_with_overflow)
      return Mult(II->getArgOperand(0)) || Mult(II->getArgOperand(1));
  if (auto *B = dyn_cast<BinaryOperator>(V)) {
    if (B->getOpcode() == Instruction::Mul)
      return Mult(B->getOperand(0)) || Mult(B->getOperand(1));
    if (B->getOpcode() == Instruction::Shl && Mult(B->getOperand(0)))
      return true; // (k * size) << n: `(1ul << exp) * sizeof(T)` folds to `8 << exp`
    if (B->getOpcode() == Instruction::Shl)
      if (auto *K = dyn_cast<ConstantInt>(B->getOperand(1)); K && K->getZExtValue() < 64)
        return (uint64_t(1) << K->getZExtValue()) % Size == 0;
  }
  return false;
}

// Is \p CI's result what its function returns (through phis, selects and
// constant offsets: SQLite's sqlite3MemMalloc returns its chunk + 8)?
bool returned(const Instruction *CI) {
  SmallVector<const Value *, 8> Work{CI};
  SmallPtrSet<const Value *, 8> Seen;
  while (!Work.empty() && Seen.size() < 32) {
    const Value *V = Work.pop_back_val();
    if (!Seen.insert(V).second)
      continue;
    for (const User *U : V->users()) {
      if (isa<ReturnInst>(U))
        return true;
      if (isa<PHINode>(U) || isa<SelectInst>(U))
        Work.push_back(U);
      else if (auto *G = dyn_cast<GetElementPtrInst>(U); G && G->getPointerOperand() == V &&
               G->hasAllConstantIndices())
        Work.push_back(U);
    }
  }
  return false;
}

// The member of composite \p T that holds byte \p Off, as a pointer type
// (nested structs and arrays followed); null if none is a pointer there.
const DIType *pointerMemberAt(const DIType *T, uint64_t Off, unsigned Depth = 0) {
  T = stripDI(T);
  if (Depth > 8 || !T)
    return nullptr;
  if (Off == 0)
    if (auto *D = dyn_cast<DIDerivedType>(T); D && (D->getTag() == dwarf::DW_TAG_pointer_type))
      return D;
  auto *C = dyn_cast<DICompositeType>(T);
  if (!C)
    return nullptr;
  if (C->getTag() == dwarf::DW_TAG_array_type) {
    const DIType *E = stripDI(C->getBaseType());
    uint64_t Sz = E ? E->getSizeInBits() / 8 : 0;
    return Sz ? pointerMemberAt(E, Off % Sz, Depth + 1) : nullptr;
  }
  if (C->getTag() != dwarf::DW_TAG_structure_type)
    return nullptr; // a union member: which one holds the pointer is not known
  for (const DINode *N : C->getElements()) {
    auto *M = dyn_cast_or_null<DIDerivedType>(N);
    if (!M || M->getTag() != dwarf::DW_TAG_member || M->isStaticMember())
      continue;
    uint64_t MOff = M->getOffsetInBits() / 8, MSz = M->getSizeInBits() / 8;
    if (Off >= MOff && Off < MOff + std::max<uint64_t>(MSz, 1))
      return pointerMemberAt(M->getBaseType(), Off - MOff, Depth + 1);
  }
  return nullptr;
}

// Is debug type \p T pointer-free (a byte, a scalar, a struct or array of
// them: sds's `struct sdshdr8`)? Unknown or opaque types are not.
bool pointerFreeDI(const DIType *T, unsigned Depth = 0) {
  T = stripDI(T);
  if (!T || Depth > 8)
    return false;
  if (isa<DIBasicType>(T))
    return true;
  if (auto *D = dyn_cast<DIDerivedType>(T))
    return D->getTag() == dwarf::DW_TAG_member && pointerFreeDI(D->getBaseType(), Depth + 1);
  auto *C = dyn_cast<DICompositeType>(T);
  if (!C || C->isForwardDecl())
    return false;
  if (C->getTag() == dwarf::DW_TAG_enumeration_type)
    return true;
  if (C->getTag() == dwarf::DW_TAG_array_type)
    return pointerFreeDI(C->getBaseType(), Depth + 1);
  if (C->getTag() != dwarf::DW_TAG_structure_type)
    return false; // a union: kept out (its alternatives are views the program may pun)
  for (const DINode *N : C->getElements()) {
    auto *M = dyn_cast_or_null<DIDerivedType>(N);
    if (!M || M->isStaticMember())
      continue;
    if (M->getTag() != dwarf::DW_TAG_member || !pointerFreeDI(M->getBaseType(), Depth + 1))
      return false;
  }
  return true;
}

// Is the result of \p CI used, in its function, only as pointer-free memory
// (FBytes)? Every value derived from it (through GEPs at any offset, phis,
// selects) that has a debug type (a variable it is the value of, a stack
// variable it is stored into, the function's return type) points to bytes
// or to a pointer-free struct, and at least one does so (`void *` views
// say nothing). Stored into memory (a struct field, a global), passed to or
// returned from another function: only its debug type there counts; the
// program-wide condition the tracer checks before it skips such an object's
// words is that no module writes pointers into untyped memory
// (findPointerStores).
bool bytesResult(CallInst *CI, const DenseMap<Value *, const DIType *> &ValueDI,
                 const DenseMap<AllocaInst *, const DILocalVariable *> &AllocaVar) {
  SmallVector<Value *, 16> Work{CI};
  SmallPtrSet<Value *, 16> Seen;
  bool Bytes = false;
  auto View = [&](const DIType *PT) {
    // the pointee of a pointer view; false: not pointer-free
    auto *D = dyn_cast_or_null<DIDerivedType>(stripDI(PT));
    if (!D || D->getTag() != dwarf::DW_TAG_pointer_type)
      return false;
    const DIType *B = stripDI(D->getBaseType());
    if (!B)
      return true; // void *: says nothing
    if (!pointerFreeDI(B))
      return false;
    Bytes = true;
    return true;
  };
  while (!Work.empty()) {
    Value *V = Work.pop_back_val();
    if (!Seen.insert(V).second)
      continue;
    if (Seen.size() > 64)
      return false; // too many views to tell
    if (auto It = ValueDI.find(V); It != ValueDI.end() && !View(It->second))
      return false;
    for (User *U : V->users()) {
      if (isa<GetElementPtrInst>(U) || isa<PHINode>(U) || isa<SelectInst>(U)) {
        Work.push_back(U);
      } else if (auto *SI = dyn_cast<StoreInst>(U); SI && SI->getValueOperand() == V) {
        if (auto *AI = dyn_cast<AllocaInst>(SI->getPointerOperand()))
          if (auto It = AllocaVar.find(AI); It != AllocaVar.end() && !View(It->second->getType()))
            return false;
      } else if (isa<ReturnInst>(U)) {
        if (DISubprogram *SP = CI->getFunction()->getSubprogram())
          if (auto *ST = SP->getType(); ST && ST->getTypeArray().size() > 0 && !View(ST->getTypeArray()[0]))
            return false;
      }
    }
  }
  return Bytes;
}

// What the result of a call to a named wrapper is used as: every debug
// type it takes (variables it is the value of, stack variables and struct
// fields it is stored into, the function's return type when returned), and
// of those the type whose size a constant argument states (`luaC_newobj(L,
// LUA_VTABLE, sizeof(Table))` is stored as a GCObject * and a Table *: the
// Table), else the biggest (the other views are its common initial
// sequence, Lua's GCObject).
uint64_t wrapperResultType(CallInst *CI, TypeTable &TT, const DenseMap<Value *, const DIType *> &ValueDI,
                           const DenseMap<AllocaInst *, const DILocalVariable *> &AllocaVar) {
  SmallVector<const DIType *, 8> Cands;
  Function &F = *CI->getFunction();
  const DataLayout &DL = F.getDataLayout();
  SmallPtrSet<const Value *, 8> Views{CI}; // CI and constant-zero offsets of it
  for (User *U : CI->users())
    if (auto *G = dyn_cast<GetElementPtrInst>(U); G && G->hasAllZeroIndices())
      Views.insert(G);
  for (BasicBlock &BB : F)
    for (Instruction &I : BB) {
      for (DbgVariableRecord &DVR : filterDbgVars(I.getDbgRecordRange()))
        if (!DVR.hasArgList() && DVR.getExpression()->getNumElements() == 0 && DVR.getVariable() &&
            Views.count(DVR.getValue(0)))
          Cands.push_back(DVR.getVariable()->getType());
      auto *SI = dyn_cast<StoreInst>(&I);
      if (!SI || !Views.count(SI->getValueOperand()))
        continue;
      Value *Ptr = SI->getPointerOperand();
      if (auto *AI = dyn_cast<AllocaInst>(Ptr)) {
        if (auto It = AllocaVar.find(AI); It != AllocaVar.end())
          Cands.push_back(It->second->getType());
        continue;
      }
      // an element of an array of pointers: `v[i] = wrapper(…)`, v a T **
      if (auto *G = dyn_cast<GetElementPtrInst>(Ptr);
          G && G->getNumIndices() == 1 && G->getSourceElementType()->isPointerTy())
        if (auto It = ValueDI.find(G->getPointerOperand()); It != ValueDI.end())
          if (auto *PT = dyn_cast_or_null<DIDerivedType>(stripDI(It->second));
              PT && PT->getTag() == dwarf::DW_TAG_pointer_type)
            if (auto *ET = dyn_cast_or_null<DIDerivedType>(stripDI(PT->getBaseType()));
                ET && ET->getTag() == dwarf::DW_TAG_pointer_type) {
              Cands.push_back(ET);
              continue;
            }
      APInt Off(64, 0);
      Value *Base = Ptr->stripAndAccumulateConstantOffsets(DL, Off, /*AllowNonInbounds=*/true);
      auto It = ValueDI.find(Base);
      if (It == ValueDI.end() || Off.isNegative())
        continue;
      auto *PT = dyn_cast_or_null<DIDerivedType>(stripDI(It->second));
      if (PT && PT->getTag() == dwarf::DW_TAG_pointer_type)
        if (const DIType *M = pointerMemberAt(PT->getBaseType(), Off.getZExtValue()))
          Cands.push_back(M);
    }
  if (returned(CI))
    if (DISubprogram *SP = F.getSubprogram())
      if (auto *ST = SP->getType(); ST && ST->getTypeArray().size() > 0 && ST->getTypeArray()[0])
        Cands.push_back(ST->getTypeArray()[0]);
  SmallVector<uint64_t, 4> Sizes;
  for (Value *A : CI->args())
    if (auto *C = dyn_cast<ConstantInt>(A); C && C->getBitWidth() <= 64)
      Sizes.push_back(C->getZExtValue());
  uint64_t Best = 0, BestSize = 0;
  bool BestExact = false;
  for (const DIType *T : Cands) {
    uint64_t Id = TT.pointeeIdOf(T);
    const TypeRec *R = Id ? TT.get(Id) : nullptr;
    if (!R || !R->Size)
      continue;
    bool Exact = is_contained(Sizes, R->Size);
    if ((Exact && !BestExact) || (Exact == BestExact && R->Size > BestSize)) {
      Best = Id;
      BestSize = R->Size;
      BestExact = Exact;
    }
  }
  return Best;
}

class SiteWriter {
public:
  SiteWriter(Module &M, TypeTable &TT, unsigned Untyped)
      : M(M), Ctx(M.getContext()), TT(TT), Untyped(Untyped) {}
  void run();

private:
  void collect(Function &F);
  void rewrite(Site &S, Constant *Rec);
  void rewriteWrapperCall(Site &S, Constant *Rec);
  GlobalVariable *handoffVar();
  GlobalVariable *emitTable();

  Module &M;
  LLVMContext &Ctx;
  TypeTable &TT;
  unsigned Untyped; // the module's untyped pointer writes (findPointerStores)
  std::vector<Site> Sites;
};

void SiteWriter::collect(Function &F) {
  // A wrapper named by --alloc-fn with a malloc/calloc/realloc shape: its
  // callers pad and mark, so its own allocation (the one it returns) does
  // not pad again (one word per object).
  SiteKind FK = wrappers().find(F.getName());
  bool IsWrapper = FK && FK != KWrapper;
  // An allocator: it returns an untyped pointer (or is a named `wrapper`);
  // a padded site whose result it returns hands its block to the caller.
  bool Allocator = FK == KWrapper;
  if (!Allocator && F.getReturnType()->isPointerTy())
    if (DISubprogram *SP = F.getSubprogram())
      if (auto *ST = SP->getType(); ST && ST->getTypeArray().size() > 0)
        Allocator = ST->getTypeArray()[0] && TT.pointeeIdOf(ST->getTypeArray()[0]) == 0;
  DenseMap<Value *, const DIType *> ValueDI;
  DenseMap<AllocaInst *, const DILocalVariable *> AllocaVar;
  bool Typed = false;
  for (BasicBlock &BB : F)
    for (Instruction &I : BB) {
      auto *CI = dyn_cast<CallInst>(&I);
      if (!CI || CI->isMustTailCall())
        continue;
      uint8_t Flags = 0;
      SiteKind K = kindOf(CI, Flags);
      if (!K)
        continue;
      if (!Typed) {
        collectValueTypes(F, ValueDI, &AllocaVar);
        Typed = true;
      }
      Site S{CI, K, Flags};
      if (returned(CI)) {
        if (IsWrapper && K != KWrapper)
          continue;
        S.Flags |= FReturned;
        S.Handoff = Allocator && K != KWrapper;
      }
      if (K == KWrapper) {
        S.Type = wrapperResultType(CI, TT, ValueDI, AllocaVar);
      } else if (const DIType *T = resultType(CI, ValueDI, AllocaVar)) {
        S.Type = TT.pointeeIdOf(T);
        // a constant request smaller than the type: not an object of it
        const TypeRec *R = TT.get(S.Type);
        Value *Size = K == KMalloc ? CI->getArgOperand(0) : K == KCalloc ? nullptr : CI->getArgOperand(1);
        if (auto *C = dyn_cast_or_null<ConstantInt>(Size); C && R && C->getZExtValue() < R->Size)
          S.Type = 0;
        if (K == KCalloc)
          if (auto *A = dyn_cast<ConstantInt>(CI->getArgOperand(0)))
            if (auto *B = dyn_cast<ConstantInt>(CI->getArgOperand(1)); B && R &&
                (A->getValue().zextOrTrunc(128) * B->getValue().zextOrTrunc(128)).ult(R->Size))
              S.Type = 0;
      }
      // an array of the type: its request is a multiple of the type's size
      // (a wrapper: one of its integer arguments is such a product)
      if (const TypeRec *R = S.Type ? TT.get(S.Type) : nullptr; R && R->Size && !(R->Flags & TFlex)) {
        bool Arr = false;
        if (K == KWrapper) {
          for (Value *A : CI->args())
            if (A->getType()->isIntegerTy() && !isa<ConstantInt>(A) && multipleOf(A, R->Size))
              Arr = true;
        } else if (K == KCalloc) {
          Arr = multipleOf(CI->getArgOperand(1), R->Size) || multipleOf(CI->getArgOperand(0), R->Size);
        } else {
          Arr = multipleOf(CI->getArgOperand(K == KMalloc ? 0 : 1), R->Size);
        }
        if (Arr)
          S.Flags |= FArray;
      }
      // a byte buffer: no type, but used as pointer-free memory only (sds, listpacks)
      if (!S.Type && K != KAlignedAlloc && bytesResult(CI, ValueDI, AllocaVar))
        S.Flags |= FBytes;
      if (const DebugLoc &DL = CI->getDebugLoc()) {
        S.Line = DL.getLine();
        S.Col = (uint16_t)std::min<unsigned>(DL.getCol(), 0xFFFF);
        S.File = DL->getFilename().str();
        if (DISubprogram *SP = DL->getScope()->getSubprogram())
          S.Func = SP->getName().str();
      }
      if (S.Func.empty())
        S.Func = F.getName().str();
      Sites.push_back(std::move(S));
    }
}

// The record table of this module: header, records, strings (FORMAT.md §4).
GlobalVariable *SiteWriter::emitTable() {
  std::vector<uint8_t> Bytes;
  auto Le = [&](uint64_t V, int N) {
    for (int I = 0; I < N; ++I)
      Bytes.push_back((V >> (8 * I)) & 0xff);
  };
  std::string Str(1, '\0');
  StringMap<uint32_t> Index;
  auto StrOf = [&](StringRef S) -> uint32_t {
    if (S.empty())
      return 0;
    auto [It, New] = Index.try_emplace(S, Str.size());
    if (New) {
      Str.append(S.begin(), S.end());
      Str.push_back('\0');
    }
    return It->second;
  };
  const uint32_t HeaderSize = 40, RecordSize = 24;
  uint32_t N = Sites.size();
  std::vector<uint32_t> FileStr, FuncStr;
  for (Site &S : Sites) {
    FileStr.push_back(StrOf(S.File));
    FuncStr.push_back(StrOf(S.Func));
  }
  uint32_t StrOff = HeaderSize + RecordSize * N;
  uint32_t Total = (StrOff + Str.size() + 7) & ~7u;
  Le(0x5453544D, 4); // "MTST"
  Le(1, 2);          // version
  Le(HeaderSize, 2);
  Le(Total, 4);      // block_size
  Le(N, 4);          // n_sites
  Le(RecordSize, 4); // record_size
  Le(StrOff, 4);     // strtab_off
  Le(Str.size(), 4); // strtab_size
  Le(StrOf(M.getSourceFileName()) , 4); // module name
  Le(BWritesCounted, 4);                 // flags
  Le(Untyped, 4);                        // untyped_pointer_writes
  // (the module name may add to Str after StrOff/size were taken: re-patch below)
  for (unsigned I = 0; I < N; ++I) {
    const Site &S = Sites[I];
    TT.use(S.Type & TypeIdMask);
    Le(S.Type & TypeIdMask, 8);
    Le(FileStr[I], 4);
    Le(FuncStr[I], 4);
    Le(S.Line, 4);
    Le(S.Col, 2);
    Le(S.Kind, 1);
    Le(S.Flags, 1);
  }
  // header fields that depend on the final string table
  Total = (StrOff + Str.size() + 7) & ~7u;
  auto Put32 = [&](size_t At, uint32_t V) {
    for (int I = 0; I < 4; ++I)
      Bytes[At + I] = (V >> (8 * I)) & 0xff;
  };
  Put32(8, Total);
  Put32(24, Str.size());
  Bytes.insert(Bytes.end(), Str.begin(), Str.end());
  while (Bytes.size() % 8)
    Bytes.push_back(0);
  Constant *Init = ConstantDataArray::get(Ctx, ArrayRef<uint8_t>(Bytes));
  auto *GV = new GlobalVariable(M, Init->getType(), /*isConstant=*/true,
                                GlobalValue::PrivateLinkage, Init, "__mappedtrace_sites");
  GV->setSection(".mtsites");
  GV->setAlignment(Align(8));
  GV->setUnnamedAddr(GlobalValue::UnnamedAddr::None); // never merged: its address is the id
  appendToUsed(M, {GV});
  return GV;
}

GlobalVariable *SiteWriter::handoffVar() {
  if (GlobalVariable *G = M.getNamedGlobal(HandoffName))
    return G;
  auto *Ty = ArrayType::get(Type::getInt64Ty(Ctx), 2);
  // one pair per thread, shared by the modules linked into one binary
  // (comdat); hidden: a shared library has its own
  auto *G = new GlobalVariable(M, Ty, /*isConstant=*/false, GlobalValue::LinkOnceODRLinkage,
                               ConstantAggregateZero::get(Ty), HandoffName, nullptr,
                               GlobalValue::InitialExecTLSModel);
  G->setVisibility(GlobalValue::HiddenVisibility);
  G->setDSOLocal(true);
  G->setComdat(M.getOrInsertComdat(HandoffName));
  G->setAlignment(Align(16));
  return G;
}

// A call to a `wrapper`: after it, write this site's word into the padding
// of the block the handoff pair names, if the result lies in that block.
void SiteWriter::rewriteWrapperCall(Site &S, Constant *Rec) {
  CallInst *CI = S.CI;
  Type *I64 = Type::getInt64Ty(Ctx);
  auto C = [&](uint64_t V) { return ConstantInt::get(I64, V); };
  Instruction *After = CI->getNextNode();
  IRBuilder<> B(After);
  Value *Pair = B.CreateThreadLocalAddress(handoffVar());
  Value *Slot1 = B.CreateConstGEP1_64(I64, Pair, 1);
  Value *Blk = B.CreateXor(B.CreateAlignedLoad(I64, Pair, Align(8)), C(HandoffMask));
  Value *Off = B.CreateAlignedLoad(I64, Slot1, Align(8));
  Value *P = B.CreatePtrToInt(CI, I64);
  Value *At = B.CreateAdd(Blk, Off);
  Value *Ok = B.CreateAnd(B.CreateICmpULT(B.CreateSub(P, Blk), C(MaxWrapperOffset)), B.CreateICmpUGE(At, P));
  // consumed, unless the result goes on to this function's caller, which may
  // be a wrapper call that knows the type better
  if (!(S.Flags & FReturned))
    B.CreateAlignedStore(C(0), Pair, Align(8));
  Instruction *Then = SplitBlockAndInsertIfThen(Ok, After, /*Unreachable=*/false);
  B.SetInsertPoint(Then);
  Value *Word = B.CreateXor(B.CreateMul(P, C(SiteMix)), ConstantExpr::getPtrToInt(Rec, I64));
  B.CreateAlignedStore(Word, B.CreateIntToPtr(At, PointerType::getUnqual(Ctx)), Align(8));
}

void SiteWriter::rewrite(Site &S, Constant *Rec) {
  if (S.Kind == KWrapper)
    return rewriteWrapperCall(S, Rec);
  CallInst *CI = S.CI;
  Type *I64 = Type::getInt64Ty(Ctx);
  IRBuilder<> B(CI);
  auto C = [&](uint64_t V) { return ConstantInt::get(I64, V); };
  // Largest request that still gets a word (above it: unchanged call, no word).
  const uint64_t MaxReq = ~0ULL - 64;
  Value *Req = nullptr, *Skip = nullptr;
  auto Padded = [&](Value *N) { return B.CreateAdd(B.CreateAnd(B.CreateAdd(N, C(7)), C(~7ULL)), C(8)); };
  // The request asks for the whole chunk glibc serves the padded request
  // with: a request m (a multiple of 8) is served by the same chunk as
  // max(24, m | 8), which ends at the chunk's last usable word. The word
  // stays at m - 8 (where the request it ends says what the object's size
  // is: arrays, wrapper chains) and the chunk's last word, when above it,
  // gets a zero: no word of an earlier allocation of the chunk can then lie
  // above this one (the tracer reads the highest word first).
  auto FillOf = [&](Value *M) { return B.CreateSelect(B.CreateICmpULT(M, C(24)), C(24), B.CreateOr(M, C(8))); };
  Value *WordAt = nullptr; // where the word goes, when not at the request's end
  // compact: no word where malloc's slack is under 8 bytes (glibc: a request
  // of 16k+1 .. 16k+8 bytes above 16 fills its chunk to the last 0..7 bytes),
  // so that no chunk grows; a constant request folds to nothing. A malloc or
  // calloc of such a size asks for the whole chunk and gets a zero in its last
  // word instead (uninitialised bytes the program has not seen yet), so that
  // no earlier allocation's word stays there; a realloc is left as it is.
  const bool Compact = compactSites();
  Value *Tt = nullptr;
  auto Tight = [&](Value *N) {
    return B.CreateAnd(B.CreateICmpUGT(N, C(16)), B.CreateICmpULT(B.CreateAnd(B.CreateSub(N, C(1)), C(15)), C(8)));
  };
  auto Align8 = [&](Value *N) { return B.CreateAnd(B.CreateAdd(N, C(7)), C(~7ULL)); };
  switch (S.Kind) {
  case KMalloc: {
    Value *N = CI->getArgOperand(0);
    Skip = B.CreateICmpUGT(N, C(MaxReq));
    Value *Pad = FillOf(Padded(N));
    WordAt = Padded(N);
    if (Compact) {
      Tt = Tight(N);
      Pad = B.CreateSelect(Tt, FillOf(Align8(N)), Pad);
      WordAt = B.CreateSelect(Tt, Pad, WordAt);
    }
    Req = B.CreateSelect(Skip, N, Pad);
    CI->setArgOperand(0, Req);
    break;
  }
  case KRealloc: {
    Value *N = CI->getArgOperand(1);
    Skip = B.CreateOr(B.CreateICmpUGT(N, C(MaxReq)), B.CreateICmpEQ(N, C(0)));
    if (Compact)
      Skip = B.CreateOr(Skip, Tight(N));
    Req = B.CreateSelect(Skip, N, FillOf(Padded(N)));
    WordAt = Padded(N);
    CI->setArgOperand(1, Req);
    break;
  }
  case KCalloc: {
    Value *K = CI->getArgOperand(0), *Sz = CI->getArgOperand(1);
    Function *Mul = Intrinsic::getOrInsertDeclaration(&M, Intrinsic::umul_with_overflow, {I64});
    Value *R = B.CreateCall(Mul, {K, Sz});
    Value *Total = B.CreateExtractValue(R, 0);
    Skip = B.CreateOr(B.CreateExtractValue(R, 1), B.CreateICmpUGT(Total, C(MaxReq)));
    Value *Pad = FillOf(Padded(Total));
    WordAt = Padded(Total);
    if (Compact) {
      Tt = Tight(Total);
      Pad = B.CreateSelect(Tt, FillOf(Align8(Total)), Pad);
      WordAt = B.CreateSelect(Tt, Pad, WordAt);
    }
    Req = B.CreateSelect(Skip, K, Pad);
    CI->setArgOperand(0, Req);
    CI->setArgOperand(1, B.CreateSelect(Skip, Sz, C(1)));
    break;
  }
  case KAlignedAlloc: {
    Value *Al = CI->getArgOperand(0), *N = CI->getArgOperand(1);
    // the request rounded up to the alignment (a non-power of two fails in malloc anyway)
    Value *AlM1 = B.CreateSub(Al, C(1));
    // alignment 0 or not a power of two: the call as it was (it fails, or means malloc)
    Value *BadAl = B.CreateOr(B.CreateICmpEQ(Al, C(0)), B.CreateICmpNE(B.CreateAnd(Al, AlM1), C(0)));
    Skip = B.CreateOr(B.CreateOr(B.CreateICmpUGT(N, C(MaxReq)), B.CreateICmpUGT(Al, C(1ULL << 40))), BadAl);
    Value *Up = B.CreateAnd(B.CreateAdd(Padded(N), AlM1), B.CreateNeg(Al));
    Req = B.CreateSelect(Skip, N, Up);
    CI->setArgOperand(1, Req);
    break;
  }
  case KWrapper:
    return; // rewriteWrapperCall
  }
  // Attributes that state the old size (allocsize stays right: it reads the operand).
  CI->removeRetAttr(Attribute::Dereferenceable);
  CI->removeRetAttr(Attribute::DereferenceableOrNull);
  Instruction *After = CI->getNextNode();
  B.SetInsertPoint(After);
  Value *Ok = B.CreateAnd(B.CreateIsNotNull(CI), B.CreateNot(Skip));
  // compact: a block that gets no word must not leave an earlier block's
  // pair behind (a wrapper's caller would write into this block's bytes if it
  // came back at that address): the pair is cleared, then set if there is a word
  if (S.Handoff && Compact)
    B.CreateAlignedStore(C(0), B.CreateThreadLocalAddress(handoffVar()), Align(8));
  Instruction *Then = SplitBlockAndInsertIfThen(Ok, After, /*Unreachable=*/false);
  B.SetInsertPoint(Then);
  Value *P = B.CreatePtrToInt(CI, I64);
  Value *Word = B.CreateXor(B.CreateMul(P, C(SiteMix)), ConstantExpr::getPtrToInt(Rec, I64));
  if (Tt)
    Word = B.CreateSelect(Tt, C(0), Word);
  if (WordAt) // the chunk's last word first (the word may be that one)
    B.CreateAlignedStore(C(0), B.CreateGEP(Type::getInt8Ty(Ctx), CI, B.CreateSub(Req, C(8))), Align(8));
  Value *WOff = B.CreateSub(WordAt ? WordAt : Req, C(8));
  Value *At = B.CreateGEP(Type::getInt8Ty(Ctx), CI, WOff, "mt.siteword");
  B.CreateAlignedStore(Word, At, Align(8));
  if (S.Handoff) {
    Value *Pair = B.CreateThreadLocalAddress(handoffVar());
    Value *Key = B.CreateXor(P, C(HandoffMask));
    if (Tt)
      Key = B.CreateSelect(Tt, C(0), Key); // no word: no handoff
    B.CreateAlignedStore(Key, Pair, Align(8));
    B.CreateAlignedStore(WOff, B.CreateConstGEP1_64(I64, Pair, 1), Align(8));
  }
}

void SiteWriter::run() {
  for (Function &F : M)
    if (isCandidate(F))
      collect(F);
  // a block even without sites: it carries the module's untyped pointer
  // writes, which the tracer needs from every module
  GlobalVariable *GV = emitTable();
  Type *I8 = Type::getInt8Ty(Ctx);
  for (unsigned I = 0; I < Sites.size(); ++I) {
    Constant *Rec = ConstantExpr::getInBoundsGetElementPtr(
        I8, GV, ConstantInt::get(Type::getInt64Ty(Ctx), 40 + 24 * (uint64_t)I));
    rewrite(Sites[I], Rec);
  }
}

} // namespace

bool allocSitesEnabled() {
  const char *E = std::getenv("MAPPEDTRACE_ALLOC_SITES");
  return E && (E[0] == '1' || compactSites());
}

void recordAllocSites(Module &M, TypeTable &TT, FunctionAnalysisManager &FAM, unsigned UntypedWrites) {
  SiteWriter W(M, TT, UntypedWrites);
  W.run();
  // the rewritten functions have new blocks: no cached analysis of them holds
  for (Function &F : M)
    if (isCandidate(F))
      FAM.invalidate(F, PreservedAnalyses::none());
}

} // namespace mappedtrace
