//===- Emitter.cpp - MappedTrace rewriter and .mtmap emitter -------------===//
//
// The module pass `mappedtrace`: for each candidate function it takes the
// MappedTraceAnalysis result and
//   * rewrites every mapped call/invoke into a gc.statepoint (ID 0x4D54<<48 |
//     1<<40 | seq) whose deopt operands are (descriptor, value) pairs per
//     FORMAT.md §1, with gc.result for the return value, the calling
//     convention, the parameter attributes (shifted to the statepoint's call
//     argument positions, which is where StatepointLowering reads them) and
//     the debug location of the original call;
//   * calls to varargs functions go through a small non-varargs thunk (the
//     statepoint verifier rejects non-void varargs callees), so the caller's
//     frame is still mapped;
//   * inserts llvm.experimental.stackmap (ID kind 2) at headers of call-free
//     loops;
//   * writes one `.mtmap` chunk (FORMAT.md §2) as a constant in section
//     ".mtmap", kept by llvm.used, its addresses relative to the chunk
//     (FORMAT.md "Addresses"; Addresses.cpp does the same for the function
//     entries of .llvm_stackmaps), and each type the maps need as a
//     `.mttypes` record in a COMDAT group keyed by the record's bytes
//     (FORMAT.md §2a: the linker keeps one copy per program), and marks the
//     module so a second run (e.g. compile then LTO) does nothing.
//
// Run: opt-22 -load-pass-plugin=MappedTracePass.so -passes=mappedtrace x.ll
//===----------------------------------------------------------------------===//
#include "MappedTrace.h"
#include "llvm/TargetParser/Triple.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/Intrinsics.h"
#include "llvm/IR/Statepoint.h"
#include "llvm/IR/Verifier.h"
#include <cstdlib>
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Transforms/Utils/ModuleUtils.h"

using namespace llvm;

namespace mappedtrace {

static constexpr const char *DoneMD = "mappedtrace.instrumented";

bool isInstrumented(const Module &M) { return M.getNamedMetadata(DoneMD) != nullptr; }

namespace {

struct FuncOut {
  Function *F = nullptr;
  std::string Name, Reason;
  uint16_t Status = 0;
  uint32_t NCalls = 0, NLoops = 0, NUnmapped = 0, NTail = 0;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> Allocas; // type, size, name
};

/// Bytes with embedded address fields, turned into a packed struct. An
/// address is written relative to the start of the blob (FORMAT.md §2,
/// "Addresses"): `target - blob`, a difference the static linker resolves,
/// or absolute where the target needs it (addressIsRelative).
class Blob {
public:
  void u8(uint8_t V) { Bytes.push_back(V); }
  void u16(uint16_t V) { le(V, 2); }
  void u32(uint32_t V) { le(V, 4); }
  void u64(uint64_t V) { le(V, 8); }
  /// An 8-byte address of \p GO; returns whether it is relative.
  bool addr(GlobalObject *GO) {
    bool Rel = addressIsRelative(*GO);
    Relocs.push_back({Bytes.size(), GO, Rel, 8});
    le(0, 8);
    return Rel;
  }
  /// Version 4: where \p GO's address can be relative, a 4-byte `target -
  /// blob`; else an 8-byte absolute address. Returns whether it is relative.
  bool addr32(GlobalObject *GO) {
    bool Rel = addressIsRelative(*GO);
    Relocs.push_back({Bytes.size(), GO, Rel, Rel ? 4u : 8u});
    le(0, Rel ? 4 : 8);
    return Rel;
  }
  void bytes(StringRef S) { Bytes.insert(Bytes.end(), S.begin(), S.end()); }
  /// A string written in place: ULEB length, then its bytes (no NUL).
  void str(StringRef S) {
    uleb(S.size());
    bytes(S);
  }
  const std::vector<uint8_t> &data() const { return Bytes; }
  uint8_t &data_at(size_t At) { return Bytes[At]; }
  void uleb(uint64_t V) {
    do {
      uint8_t B = V & 0x7f;
      V >>= 7;
      Bytes.push_back(B | (V ? 0x80 : 0));
    } while (V);
  }
  void sleb(int64_t V) {
    bool More = true;
    while (More) {
      uint8_t B = V & 0x7f;
      V >>= 7; // arithmetic shift
      More = !((V == 0 && !(B & 0x40)) || (V == -1 && (B & 0x40)));
      Bytes.push_back(B | (More ? 0x80 : 0));
    }
  }
  void put32(size_t At, uint32_t V) {
    for (int I = 0; I < 4; ++I)
      Bytes[At + I] = (V >> (8 * I)) & 0xff;
  }
  void align8() {
    while (Bytes.size() % 8)
      Bytes.push_back(0);
  }
  size_t size() const { return Bytes.size(); }
  /// The private constant \p Name in \p Section holding the blob.
  GlobalVariable *emit(Module &M, StringRef Name, StringRef Section, unsigned Alignment = 8) const {
    LLVMContext &Ctx = M.getContext();
    Type *I64 = Type::getInt64Ty(Ctx);
    Type *I32 = Type::getInt32Ty(Ctx);
    SmallVector<Type *, 16> Tys;
    forParts([&](size_t Pos, size_t End) { Tys.push_back(ArrayType::get(Type::getInt8Ty(Ctx), End - Pos)); },
             [&](const Reloc &R) { Tys.push_back(R.Size == 4 ? I32 : I64); });
    StructType *ST = StructType::get(Ctx, Tys, /*isPacked=*/true);
    auto *GV = new GlobalVariable(M, ST, /*isConstant=*/true, GlobalValue::PrivateLinkage,
                                  nullptr, Name);
    Constant *Base = ConstantExpr::getPtrToInt(GV, I64);
    SmallVector<Constant *, 16> Parts;
    forParts(
        [&](size_t Pos, size_t End) {
          Parts.push_back(ConstantDataArray::get(Ctx, ArrayRef<uint8_t>(Bytes.data() + Pos, End - Pos)));
        },
        [&](const Reloc &R) {
          Constant *C = R.Relative ? ConstantExpr::getSub(
                                         ConstantExpr::getPtrToInt(localAddressOf(*R.GO), I64), Base)
                                   : ConstantExpr::getPtrToInt(R.GO, I64);
          // a 4-byte difference: the assembler emits a 32-bit PC-relative fixup
          Parts.push_back(R.Size == 4 ? ConstantExpr::getTrunc(C, I32) : C);
        });
    GV->setInitializer(ConstantStruct::get(ST, Parts));
    GV->setSection(Section);
    GV->setAlignment(Align(Alignment));
    return GV;
  }

private:
  struct Reloc {
    size_t Off;
    GlobalObject *GO;
    bool Relative;
    unsigned Size; // 8, or 4 for a relative address of version 4
  };
  template <typename RawFn, typename RelocFn> void forParts(RawFn Raw, RelocFn Rel) const {
    size_t Pos = 0;
    for (const Reloc &R : Relocs) {
      if (R.Off > Pos)
        Raw(Pos, R.Off);
      Rel(R);
      Pos = R.Off + R.Size;
    }
    if (Bytes.size() > Pos)
      Raw(Pos, Bytes.size());
  }
  void le(uint64_t V, int N) {
    for (int I = 0; I < N; ++I)
      Bytes.push_back((V >> (8 * I)) & 0xff);
  }
  std::vector<uint8_t> Bytes;
  std::vector<Reloc> Relocs;
};

class StringTab {
public:
  StringTab() { Data.push_back('\0'); }
  uint32_t get(StringRef S) {
    if (S.empty())
      return 0;
    auto [It, New] = Index.try_emplace(S, Data.size());
    if (New) {
      Data.append(S.begin(), S.end());
      Data.push_back('\0');
    }
    return It->second;
  }
  const std::string &data() const { return Data; }

private:
  std::string Data;
  StringMap<uint32_t> Index;
};

class Emitter {
public:
  Emitter(Module &M, ModuleAnalysisManager &MAM, bool O0)
      : M(M), Ctx(M.getContext()), TT(M), O0(O0),
        FAM(MAM.getResult<FunctionAnalysisManagerModuleProxy>(M).getManager()) {}
  void run();

private:
  uint64_t entryTypeId(const MapEntry &E);
  SmallVector<Value *, 16> deoptOperands(const MapSite &S, IRBuilder<> &B, bool MaySpill);
  Function *thunkFor(CallBase *CB);
  void rewriteCall(CallBase *CB, const MapSite &S, Function *Thunk);
  void insertLoopPoint(const MapSite &S);
  void keepStackMapsUnderGC();
  void emitMap();
  // A global or thread-local whose type holds pointers.
  struct GOut {
    GlobalVariable *G;
    uint64_t Size, Type;
    uint32_t Flags;
  };
  void emitTypeRecord(const TypeRec &R);
  void emitChunkV4(const std::vector<GOut> &Globals);

  Module &M;
  LLVMContext &Ctx;
  TypeTable TT;
  bool O0;
  FunctionAnalysisManager &FAM;
  uint64_t Seq = 0;
  std::vector<FuncOut> Funcs;
  // Calls already rewritten → their gc.result (the analysis names originals).
  DenseMap<Value *, Value *> Replaced;
  std::map<std::tuple<Value *, FunctionType *, FunctionType *, void *>, Function *> Thunks;
  // scalar globals the program stores pointers into: their STORED byte ranges
  std::map<GlobalVariable *, std::vector<std::pair<uint64_t, uint64_t>>> StoredGlobals;
};

// The record ID bits that say how the function's stack map entry gives its
// address (Addresses.cpp).
static uint64_t idFlags(const Function &F) {
  return addressIsRelative(F) ? IdRelativeFn : 0;
}

uint64_t Emitter::entryTypeId(const MapEntry &E) {
  if (E.IsSlot) {
    uint64_t Id = E.DI ? TT.idOf(E.DI) : (E.IRFallback ? TT.idOfIR(E.IRFallback) : 0);
    if (E.AllStored && Id)
      if (const TypeRec *R = TT.get(Id))
        Id = TT.withStored(Id, {{0, R->Size}});
    return Id;
  }
  if (E.DI)
    return TT.pointeeIdOf(E.DI);
  if (auto *ST = dyn_cast_or_null<StructType>(E.IRFallback); ST && ST->hasName())
    return TT.idOfIRStructName(ST->getName());
  return 0;
}

// How many pointer values one statepoint may ask to keep in registers; the
// rest are spilled. A value becomes a spilled one by handing the statepoint
// an addrspace(1) view of it: that address space is what the
// "statepoint-example" strategy calls managed, and managed deopt values
// always get a stack slot (Indirect location). By default there is no cap:
// the register allocator keeps each value where it would anyway (a callee-
// saved register, or its spill slot folded into the statepoint). Before
// derived pointers were recorded as constants (DERIVED), dozens of hoisted
// field addresses per call made it run out of registers (SQLite, Lua); if
// it still does, the driver retries with MAPPEDTRACE_MAX_REG_VALUES=2.
static unsigned maxRegisterValues() {
  if (const char *E = std::getenv("MAPPEDTRACE_MAX_REG_VALUES"))
    return (unsigned)std::strtoul(E, nullptr, 10);
  return ~0u;
}

SmallVector<Value *, 16> Emitter::deoptOperands(const MapSite &S, IRBuilder<> &B,
                                                bool MaySpill) {
  SmallVector<Value *, 16> Ops;
  Type *I64 = Type::getInt64Ty(Ctx);
  static const unsigned MaxRegs = maxRegisterValues();
  unsigned NValues = 0;
  auto Push = [&](uint64_t Desc, Value *V, bool IsSlot) {
    Ops.push_back(ConstantInt::get(I64, Desc));
    if (!IsSlot && MaySpill && ++NValues > MaxRegs)
      V = B.CreateAddrSpaceCast(V, PointerType::get(Ctx, 1), "mt.spill");
    Ops.push_back(V);
  };
  // Pair index of each entry's first pair (for DERIVED entries' base).
  SmallVector<unsigned, 16> PairOf;
  for (const MapEntry &E : S.Entries) {
    PairOf.push_back(Ops.size() / 2);
    if (E.DerivedFrom >= 0) {
      // The base is an earlier pointer VALUE entry: exactly one pair.
      Ops.push_back(ConstantInt::get(I64, RoleDerived | PairOf[E.DerivedFrom]));
      Ops.push_back(ConstantInt::get(I64, (uint64_t)E.Offset));
      continue;
    }
    uint64_t Ty = entryTypeId(E) & TypeIdMask;
    TT.use(Ty);
    uint64_t Desc = (E.IsSlot ? RoleSlot : RoleValue) | Ty;
    Value *V = Replaced.lookup_or(E.V, E.V);
    Type *T = V->getType();
    if (E.IsSlot || T->isPointerTy()) {
      Push(Desc, V, E.IsSlot);
    } else if (auto *VT = dyn_cast<FixedVectorType>(T)) {
      for (unsigned I = 0; I < VT->getNumElements(); ++I)
        Push(RoleValue, B.CreateExtractElement(V, B.getInt64(I), "mt.lane"), false);
    } else if (auto *ST = dyn_cast<StructType>(T)) {
      for (unsigned I = 0; I < ST->getNumElements(); ++I)
        if (ST->getElementType(I)->isPointerTy())
          Push(RoleValue, B.CreateExtractValue(V, I, "mt.field"), false);
    } else if (auto *AT = dyn_cast<ArrayType>(T)) {
      for (unsigned I = 0; I < AT->getNumElements(); ++I)
        Push(RoleValue, B.CreateExtractValue(V, I, "mt.field"), false);
    }
  }
  return Ops;
}

// A non-varargs internal function that makes the varargs call, so the caller
// can call it through a statepoint. For an indirect call the callee is its
// first parameter.
Function *Emitter::thunkFor(CallBase *CB) {
  Value *Callee = CB->getCalledOperand();
  bool Direct = isa<Function>(Callee->stripPointerCasts());
  FunctionType *FT = CB->getFunctionType();
  AttributeList AL = CB->getAttributes();
  // Indirect thunks are keyed by type and attributes only.
  SmallVector<Type *, 8> Params;
  if (!Direct)
    Params.push_back(Callee->getType());
  for (Value *A : CB->args())
    Params.push_back(A->getType());
  FunctionType *TFT = FunctionType::get(FT->getReturnType(), Params, false);
  auto KeyT = std::make_tuple(Direct ? Callee : nullptr, FT, TFT, AL.getRawPointer());
  if (auto It = Thunks.find(KeyT); It != Thunks.end())
    return It->second;
  Function *T = Function::Create(TFT, GlobalValue::InternalLinkage,
                                 "__mappedtrace_va_thunk", &M);
  T->addFnAttr("mappedtrace-thunk");
  T->addFnAttr(Attribute::NoInline);
  T->addFnAttr(Attribute::NoUnwind);
  if (!CB->doesNotThrow())
    T->removeFnAttr(Attribute::NoUnwind);
  if (CB->getCaller()->hasFnAttribute("frame-pointer"))
    T->addFnAttr(CB->getCaller()->getFnAttribute("frame-pointer"));
  for (StringRef A : {"target-cpu", "target-features", "tune-cpu"})
    if (CB->getCaller()->hasFnAttribute(A))
      T->addFnAttr(CB->getCaller()->getFnAttribute(A));
  unsigned Shift = Direct ? 0 : 1;
  for (unsigned I = 0; I < CB->arg_size(); ++I)
    T->addParamAttrs(I + Shift, AttrBuilder(Ctx, AL.getParamAttrs(I)));
  BasicBlock *BB = BasicBlock::Create(Ctx, "entry", T);
  IRBuilder<> B(BB);
  SmallVector<Value *, 8> Args;
  for (unsigned I = 0; I < CB->arg_size(); ++I)
    Args.push_back(T->getArg(I + Shift));
  CallInst *C = B.CreateCall(FT, Direct ? Callee : T->getArg(0), Args);
  C->setCallingConv(CB->getCallingConv());
  C->setAttributes(AttributeList::get(Ctx, AttributeSet(), AL.getRetAttrs(),
                                      [&] {
                                        SmallVector<AttributeSet, 8> P;
                                        for (unsigned I = 0; I < CB->arg_size(); ++I)
                                          P.push_back(AL.getParamAttrs(I));
                                        return P;
                                      }()));
  if (FT->getReturnType()->isVoidTy())
    B.CreateRetVoid();
  else
    B.CreateRet(C);
  Thunks[KeyT] = T;
  return T;
}

void Emitter::rewriteCall(CallBase *CB, const MapSite &S, Function *Thunk) {
  IRBuilder<> B(CB);
  uint64_t ID = IdMagic | IdKindCall | idFlags(*CB->getFunction()) | (Seq++ & IdSeqMask);
  SmallVector<Value *, 16> Deopt = deoptOperands(S, B, /*MaySpill=*/true);
  FunctionCallee Callee(CB->getFunctionType(), CB->getCalledOperand());
  SmallVector<Value *, 8> Args(CB->args());
  AttributeList AL = CB->getAttributes();
  SmallVector<AttributeSet, 8> ArgAttrs;
  for (unsigned I = 0; I < CB->arg_size(); ++I)
    ArgAttrs.push_back(AL.getParamAttrs(I));
  CallingConv::ID CC = CB->getCallingConv();
  if (Thunk) {
    bool Direct = Thunk->arg_size() == CB->arg_size();
    if (!Direct) {
      Args.insert(Args.begin(), CB->getCalledOperand());
      ArgAttrs.insert(ArgAttrs.begin(), AttributeSet());
    }
    Callee = FunctionCallee(Thunk->getFunctionType(), Thunk);
    CC = CallingConv::C;
  }
  Type *RetTy = CB->getType();
  CallBase *SP;
  BasicBlock *ResultBlock = nullptr;
  if (auto *II = dyn_cast<InvokeInst>(CB)) {
    BasicBlock *Normal = II->getNormalDest();
    if (!RetTy->isVoidTy()) {
      // gc.result must sit in a block whose only predecessor is the invoke.
      BasicBlock *NB = BasicBlock::Create(Ctx, "mt.normal", CB->getFunction(), Normal);
      BranchInst::Create(Normal, NB)->setDebugLoc(CB->getDebugLoc());
      Normal->replacePhiUsesWith(II->getParent(), NB);
      Normal = NB;
      ResultBlock = NB;
    }
    SP = B.CreateGCStatepointInvoke(ID, 0, Callee, Normal, II->getUnwindDest(), Args,
                                    ArrayRef<Value *>(Deopt), {}, "");
  } else {
    SP = B.CreateGCStatepointCall(ID, 0, Callee, Args, ArrayRef<Value *>(Deopt), {}, "");
  }
  SP->setCallingConv(CC);
  SP->setDebugLoc(CB->getDebugLoc());
  // Parameter attributes at the statepoint's call-argument positions.
  AttributeList SAL = SP->getAttributes();
  for (unsigned I = 0; I < ArgAttrs.size(); ++I)
    if (ArgAttrs[I].hasAttributes())
      SAL = SAL.addParamAttributes(Ctx, GCStatepointInst::CallArgsBeginPos + I,
                                   AttrBuilder(Ctx, ArgAttrs[I]));
  if (AL.hasFnAttr(Attribute::NoUnwind))
    SAL = SAL.addFnAttribute(Ctx, Attribute::NoUnwind);
  SP->setAttributes(SAL);
  if (!RetTy->isVoidTy()) {
    IRBuilder<> RB(Ctx);
    if (ResultBlock)
      RB.SetInsertPoint(ResultBlock, ResultBlock->getFirstInsertionPt());
    else
      RB.SetInsertPoint(CB);
    CallInst *GR = RB.CreateGCResult(SP, RetTy, CB->getName());
    GR->setDebugLoc(CB->getDebugLoc());
    CB->replaceAllUsesWith(GR);
    Replaced[CB] = GR;
  }
  CB->eraseFromParent();
}

void Emitter::insertLoopPoint(const MapSite &S) {
  IRBuilder<> B(S.I);
  uint64_t ID = IdMagic | IdKindLoop | idFlags(*S.I->getFunction()) | (Seq++ & IdSeqMask);
  SmallVector<Value *, 16> Ops{B.getInt64(ID), B.getInt32(0)};
  for (Value *V : deoptOperands(S, B, /*MaySpill=*/false))
    Ops.push_back(V);
  Function *SM = Intrinsic::getOrInsertDeclaration(&M, Intrinsic::experimental_stackmap);
  CallInst *C = B.CreateCall(SM, Ops);
  C->setDebugLoc(S.I->getDebugLoc());
}

void Emitter::run() {
  // Before any type id is made: the layouts get the STORED words first.
  unsigned Untyped = findPointerStores(M, TT, StoredGlobals);
  if (allocSitesEnabled())
    recordAllocSites(M, TT, FAM, Untyped);
  for (Function &F : M) {
    if (!isCandidate(F))
      continue;
    FunctionMapInfo Info = FAM.getResult<MappedTraceAnalysis>(F);
    FuncOut O;
    O.F = &F;
    O.Name = F.getName().str();
    if (Info.Skipped) {
      O.Status = 1;
      O.Reason = Info.Reason;
      errs() << "mappedtrace: warning: " << F.getName() << " not instrumented: "
             << Info.Reason << "\n";
      Funcs.push_back(std::move(O));
      continue;
    }
    SmallPtrSet<CallBase *, 8> Varargs(Info.VarargCalls.begin(), Info.VarargCalls.end());
    // Loop points first: their insertion points are not calls we rewrite.
    for (const MapSite &S : Info.Loops)
      insertLoopPoint(S);
    for (const MapSite &S : Info.Calls) {
      auto *CB = cast<CallBase>(S.I);
      Function *Thunk = Varargs.count(CB) ? thunkFor(CB) : nullptr;
      rewriteCall(CB, S, Thunk);
    }
    // A GC strategy whose managed pointers live in addrspace(1) only: our
    // pointers are then plain deopt values that codegen may keep in
    // registers (without a strategy every pointer deopt value is treated as
    // a GC pointer and spilled at each statepoint).
    // The strategy is "statepoint-example" plus the printer that makes the
    // function addresses of .llvm_stackmaps relative (Addresses.cpp); any
    // function with a record gets it, so that the printer runs.
    if (!Info.Calls.empty() || !Info.Loops.empty())
      F.setGC(GCStrategyName);
    O.NCalls = Info.Calls.size();
    O.NLoops = Info.Loops.size();
    O.NUnmapped = Info.Unmapped;
    O.NTail = Info.TailCalls;
    if (O.NUnmapped) {
      O.Status = 2;
      O.Reason = Info.Reason;
    }
    for (const SlotInfo &SI : Info.Slots) {
      uint64_t Ty = SI.DI ? TT.idOf(SI.DI) : 0;
      if (!Ty && !SI.DI) {
        Type *AT = SI.AI->getAllocatedType();
        if (!(AT->isArrayTy() && AT->getArrayElementType()->isIntegerTy(8)))
          Ty = TT.idOfIR(AT);
      }
      O.Allocas.emplace_back(Ty, SI.Size, SI.Name);
    }
    Funcs.push_back(std::move(O));
    Replaced.clear();
    FAM.invalidate(F, PreservedAnalyses::none());
  }
  for (auto &[K, T] : Thunks) {
    FuncOut O;
    O.F = T;
    O.Name = T->getName().str();
    O.Status = 2;
    O.Reason = "varargs thunk";
    O.NUnmapped = 1;
    Funcs.push_back(std::move(O));
  }
  emitMap();
  keepStackMapsUnderGC();
  M.getOrInsertNamedMetadata(DoneMD);
  // clang runs without the IR verifier; tests ask for it explicitly.
  if (const char *V = std::getenv("MAPPEDTRACE_VERIFY"); V && V[0] == '1')
    if (verifyModule(M, &errs()))
      report_fatal_error("mappedtrace: the instrumented module is broken");
}

// A type's size, name, kind, flags, counts, element, flexible-array offset and
// pointer slots in LEB128: the layout `.mtmap` version 3 chunks and `.mttypes`
// records share (FORMAT.md §2). They differ only in how a name and a type id
// are written (WriteName, Ref); the fields that follow are the caller's.
template <typename NameFn, typename RefFn>
static void lebTypeHead(Blob &B, const TypeRec &R, NameFn WriteName, RefFn Ref) {
  B.uleb(R.Size);
  WriteName(R.Name);
  B.u8(R.Kind);
  B.uleb(R.Flags);
  B.uleb(R.Slots.size());
  B.uleb(R.Fields.size());
  B.uleb(Ref(R.Elem));
  B.uleb(R.FlexOffset);
  uint64_t Prev = 0;
  for (const SlotRec &S : R.Slots) {
    // slots are sorted by offset: the (signed) distance from the previous one
    B.sleb((int64_t)(S.Offset - Prev));
    Prev = S.Offset;
    B.uleb(Ref(S.Target));
    B.uleb(S.Count);
    if (S.Count > 1)
      B.uleb(S.Stride);
    B.uleb(S.Flags);
  }
}

void Emitter::emitMap() {
  Type *I64 = Type::getInt64Ty(Ctx);
  (void)I64;
  // Globals and thread-locals whose type holds pointers.
  std::vector<GOut> Globals;
  const DataLayout &DL = M.getDataLayout();
  for (GlobalVariable &G : M.globals()) {
    if (G.isDeclaration() || G.getName().starts_with("llvm.") ||
        (G.hasSection() && (G.getSection() == ".mtmap" || G.getSection() == "llvm.metadata")))
      continue;
    SmallVector<DIGlobalVariableExpression *, 1> GVEs;
    G.getDebugInfo(GVEs);
    uint64_t Ty = 0;
    bool HasDI = false;
    for (auto *E : GVEs)
      if (E->getVariable() && E->getExpression()->getNumElements() == 0) {
        Ty = TT.idOf(E->getVariable()->getType());
        HasDI = true;
        break;
      }
    if (auto It = StoredGlobals.find(&G); It != StoredGlobals.end() && HasDI)
      Ty = TT.withStored(Ty, It->second);
    bool Ptrs = HasDI ? TT.hasPointers(Ty) : false;
    if (!HasDI) {
      // No debug info: constants cannot hold heap pointers; mutable data
      // whose IR type holds pointers is typed from the IR.
      if (G.isConstant())
        continue;
      Type *VT = G.getValueType();
      Ty = TT.idOfIR(VT);
      Ptrs = TT.hasPointers(Ty) || (VT->isArrayTy() && VT->getArrayElementType()->isIntegerTy(8) &&
                                    DL.getTypeAllocSize(VT) >= 8 && false);
    }
    if (!Ptrs)
      continue;
    uint32_t Flags = (G.isThreadLocal() ? 1 : 0) | (G.isConstant() ? 2 : 0);
    Globals.push_back({&G, DL.getTypeAllocSize(G.getValueType()), Ty, Flags});
  }

  for (const GOut &G : Globals)
    TT.use(G.Type);
  for (const FuncOut &O : Funcs)
    for (auto &[Ty, Size, Name] : O.Allocas)
      TT.use(Ty);
  // Types nothing refers to (the debug types of globals without pointers,
  // string literals' char[N], …) are left out: only what the maps use, the
  // definitions a declaration elsewhere may resolve to, and what those refer to.
  std::set<uint64_t> Keep = TT.reachable();
  std::vector<const TypeRec *> Types;
  for (const auto &[Id, R] : TT.all())
    if (Keep.count(Id))
      Types.push_back(&R);

  // Version 4 (the default, ELF) writes each type as a record of its own in
  // .mttypes, in a COMDAT group keyed by the record's bytes, so the linker
  // keeps one copy per program; the chunk names types by id only.
  // MAPPEDTRACE_MTMAP_VERSION=2 or 3 writes the types into the chunk (tests
  // compare the decodings).
  unsigned Version = MtmapVersion;
  if (const char *VE = std::getenv("MAPPEDTRACE_MTMAP_VERSION"); VE && (VE[0] == '2' || VE[0] == '3') && !VE[1])
    Version = VE[0] - '0';
  if (!M.getTargetTriple().isOSBinFormatELF())
    Version = 3; // COMDAT groups keyed by name are ELF's
  if (Version == 4) {
    for (const TypeRec *R : Types)
      emitTypeRecord(*R);
    emitChunkV4(Globals);
    return;
  }
  bool V2 = Version == 2;

  StringTab Str;
  Blob B;
  // Header, patched at the end.
  B.u32(0x504D544D); // "MTMP" little-endian bytes 4D 54 4D 50
  B.u16(Version);
  B.u16(V2 ? 56 : 64);
  size_t ChunkSizeAt = B.size();
  B.u32(0);
  uint32_t Flags = (TT.isRust() ? 1 : 0) | (O0 ? 2 : 0);
  B.u32(Flags);
  size_t CountsAt = B.size();
  for (int I = 0; I < 9; ++I)
    B.u32(0); // n_types n_functions n_globals strtab_size types_off functions_off globals_off strtab_off module_name
  B.u32(0);   // reserved
  // Version 3: a type id is written as a reference (FORMAT.md §2): 0, the
  // index + 1 of a type of this chunk, or past those, an entry of the id table.
  std::map<uint64_t, uint64_t> Ref;
  std::vector<uint64_t> ExtraIds;
  auto ref = [&](uint64_t Id) -> uint64_t {
    if (Id == 0)
      return 0;
    auto [It, New] = Ref.try_emplace(Id, 0);
    if (New) {
      ExtraIds.push_back(Id);
      It->second = Types.size() + ExtraIds.size();
    }
    return It->second;
  };
  size_t IdsAt = B.size();
  if (!V2) {
    B.u32(0); // n_ids
    B.u32(0); // ids_off
    uint64_t I = 0;
    for (const TypeRec *R : Types)
      Ref[R->Id] = ++I;
  }
  uint32_t TypesOff = B.size();
  for (const TypeRec *TR : Types) {
    const TypeRec &R = *TR;
    if (!V2) {
      B.u64(R.Id);
      lebTypeHead(B, R, [&](const auto &Name) { B.uleb(Str.get(Name)); }, ref);
      for (const FieldRec &F : R.Fields) {
        B.uleb(F.Offset);
        B.uleb(ref(F.Type));
        B.uleb(Str.get(F.Name));
        B.uleb(F.Flags);
      }
      continue;
    }
    B.u64(R.Id);
    B.u64(R.Size);
    B.u32(Str.get(R.Name));
    B.u8(R.Kind);
    B.u8(0);
    B.u16(R.Flags);
    B.u32(R.Slots.size());
    B.u32(R.Fields.size()); // n_fields (version 2)
    B.u64(R.Elem);
    B.u64(R.FlexOffset);
    for (const SlotRec &S : R.Slots) {
      B.u64(S.Offset);
      B.u64(S.Target);
      B.u32(S.Count);
      B.u32(S.Count > 1 ? S.Stride : 0);
      B.u32(S.Flags);
      B.u32(0);
    }
    for (const FieldRec &F : R.Fields) {
      B.u64(F.Offset);
      B.u64(F.Type);
      B.u32(Str.get(F.Name));
      B.u32(F.Flags);
    }
  }
  uint32_t NTypes = Types.size();
  uint32_t FunctionsOff = B.size();
  for (const FuncOut &O : Funcs) {
    // A function that will not be emitted (no body left) gets address 0.
    bool Abs = false;
    if (O.F && !O.F->isDeclarationForLinker())
      Abs = !B.addr(O.F);
    else
      B.u64(0);
    if (!V2) {
      B.uleb(Str.get(O.Name));
      B.uleb(Str.get(O.Reason));
      B.u8(O.Status);
      B.u8(Abs ? FnAddrAbsolute : 0);
      B.uleb(O.NCalls);
      B.uleb(O.NLoops);
      B.uleb(O.NUnmapped);
      B.uleb(O.Allocas.size());
      B.uleb(O.NTail);
      for (auto &[Ty, Size, Name] : O.Allocas) {
        B.uleb(ref(Ty));
        B.uleb(Size);
        B.uleb(Str.get(Name));
      }
      continue;
    }
    B.u32(Str.get(O.Name));
    B.u32(Str.get(O.Reason));
    B.u16(O.Status);
    B.u16(Abs ? FnAddrAbsolute : 0);
    B.u32(O.NCalls);
    B.u32(O.NLoops);
    B.u32(O.NUnmapped);
    B.u32(O.Allocas.size());
    B.u32(O.NTail);
    for (auto &[Ty, Size, Name] : O.Allocas) {
      B.u64(Ty);
      B.u64(Size);
      B.u32(Str.get(Name));
      B.u32(0);
    }
  }
  uint32_t GlobalsOff = B.size();
  for (const GOut &G : Globals) {
    uint32_t Flags = G.Flags;
    if (G.Flags & 1)
      B.u64(0);
    else if (!B.addr(G.G))
      Flags |= GlobalAddrAbsolute;
    if (!V2) {
      B.uleb(G.Size);
      B.uleb(ref(G.Type));
      B.uleb(Str.get(G.G->getName()));
      B.uleb(Flags);
      continue;
    }
    B.u64(G.Size);
    B.u64(G.Type);
    B.u32(Str.get(G.G->getName()));
    B.u32(Flags);
  }
  if (!V2) {
    B.put32(IdsAt, ExtraIds.size());
    B.put32(IdsAt + 4, B.size());
    for (uint64_t Id : ExtraIds)
      B.u64(Id);
  }
  uint32_t ModName = Str.get(M.getSourceFileName());
  uint32_t StrOff = B.size();
  for (char C : Str.data())
    B.u8((uint8_t)C);
  uint32_t StrSize = Str.data().size();
  B.align8();
  // The type table is complete only now (function/global emission may add
  // none, but be exact): recount.
  B.put32(ChunkSizeAt, B.size());
  uint32_t Counts[9] = {NTypes, (uint32_t)Funcs.size(), (uint32_t)Globals.size(), StrSize,
                        TypesOff, FunctionsOff, GlobalsOff, StrOff, ModName};
  for (int I = 0; I < 9; ++I)
    B.put32(CountsAt + 4 * I, Counts[I]);

  GlobalVariable *GV = B.emit(M, "__mappedtrace_map", ".mtmap");
  appendToUsed(M, {GV});
}

// One .mttypes record (FORMAT.md §2a): the type with the ids it refers to and
// its strings in place, no relocation, so that the same record of two
// objects is the same bytes. It goes into a COMDAT group named after a hash
// of those bytes: the linker keeps one copy of each. Two modules' records of
// one type differ only where their STORED slots differ (PointerStores.cpp);
// then both are kept, and a reader takes the union.
void Emitter::emitTypeRecord(const TypeRec &R) {
  std::vector<uint64_t> Ids;
  std::map<uint64_t, uint64_t> Index;
  auto ref = [&](uint64_t Id) -> uint64_t {
    if (Id == 0)
      return 0;
    if (Id == R.Id)
      return 1;
    auto [It, New] = Index.try_emplace(Id, Ids.size() + 2);
    if (New)
      Ids.push_back(Id);
    return It->second;
  };
  Blob Body;
  lebTypeHead(Body, R, [&](const auto &Name) { Body.str(Name); }, ref);
  uint64_t Prev = 0;
  for (const FieldRec &F : R.Fields) {
    // members come in declaration order: the (signed) distance from the previous one
    Body.sleb((int64_t)(F.Offset - Prev));
    Prev = F.Offset;
    Body.uleb(ref(F.Type));
    Body.str(F.Name);
    Body.uleb(F.Flags);
  }
  Blob Head;
  Head.u64(R.Id);
  Head.uleb(Ids.size());
  for (uint64_t Id : Ids)
    Head.u64(Id);
  std::vector<uint8_t> Rec{TypeRecordVersion};
  Blob Len;
  Len.uleb(Head.size() + Body.size());
  Rec.insert(Rec.end(), Len.data().begin(), Len.data().end());
  Rec.insert(Rec.end(), Head.data().begin(), Head.data().end());
  Rec.insert(Rec.end(), Body.data().begin(), Body.data().end());
  // 64 bits of xxh3 name the group: a collision (odds about n^2 / 2^65 for
  // n records in a program) would drop one of the two records.
  std::string Name = "__mappedtrace_type." + utohexstr(xxh3_64bits(Rec), /*LowerCase=*/true, 16);
  if (M.getNamedValue(Name))
    return;
  auto *GV = new GlobalVariable(M, ArrayType::get(Type::getInt8Ty(Ctx), Rec.size()), /*isConstant=*/true,
                                GlobalValue::LinkOnceODRLinkage,
                                ConstantDataArray::get(Ctx, ArrayRef<uint8_t>(Rec)), Name);
  GV->setVisibility(GlobalValue::HiddenVisibility);
  GV->setComdat(M.getOrInsertComdat(Name));
  GV->setSection(TypeRecordSection);
  GV->setAlignment(Align(1));
  // kept under --gc-sections (SHF_GNU_RETAIN), like the chunk
  appendToUsed(M, {GV});
}

// A version 4 chunk (FORMAT.md §2, "Version 4"): functions and globals, types
// by id only (their records are in .mttypes), byte-aligned.
void Emitter::emitChunkV4(const std::vector<GOut> &Globals) {
  StringTab Str;
  std::vector<uint64_t> Ids;
  std::map<uint64_t, uint64_t> Index;
  auto ref = [&](uint64_t Id) -> uint64_t {
    if (Id == 0)
      return 0;
    auto [It, New] = Index.try_emplace(Id, Ids.size() + 1);
    if (New)
      Ids.push_back(Id);
    return It->second;
  };
  auto reason = [&](StringRef Why) -> uint64_t {
    if (Why.empty())
      return 0;
    for (size_t I = 0; I < std::size(StdReasons); ++I)
      if (Why == StdReasons[I])
        return I + 1;
    return StdReasonLimit + Str.get(Why);
  };
  // The tables first (their addresses are relative to the chunk's start, so
  // the header is written into the same blob, before them, with its size
  // fields patched at the end).
  Blob B;
  B.u32(0x504D544D); // "MTMP"
  B.u16(4);
  B.u16(12); // fixed header bytes; the counts follow as ULEB
  size_t ChunkSizeAt = B.size();
  B.u32(0);
  // The counts come first: the ids and strings the entries will name are
  // collected before any entry is written.
  for (const FuncOut &O : Funcs)
    for (auto &[Ty, Size, Name] : O.Allocas)
      ref(Ty);
  for (const GOut &G : Globals)
    ref(G.Type);
  uint32_t ModName = Str.get(M.getSourceFileName());
  for (const FuncOut &O : Funcs) {
    Str.get(O.Name);
    reason(O.Reason);
    for (auto &[Ty, Size, Name] : O.Allocas)
      Str.get(Name);
  }
  for (const GOut &G : Globals)
    Str.get(G.G->getName());
  B.uleb((TT.isRust() ? 1 : 0) | (O0 ? 2 : 0));
  B.uleb(Funcs.size());
  B.uleb(Globals.size());
  B.uleb(Ids.size());
  B.uleb(Str.data().size());
  B.uleb(ModName);
  for (uint64_t Id : Ids)
    B.u64(Id);
  for (const FuncOut &O : Funcs) {
    // A varargs thunk's entry is its flags and address: its name is its
    // symbol's, the rest is the same for every thunk (FORMAT.md §2, Version 4).
    bool Thunk = O.F && O.F->hasFnAttribute("mappedtrace-thunk") && O.Reason == StdReasons[2] &&
                 O.Status == 2 && !O.NCalls && !O.NLoops && O.NUnmapped == 1 && !O.NTail &&
                 O.Allocas.empty();
    bool HasAddr = O.F && !O.F->isDeclarationForLinker();
    bool Counts = O.NLoops || O.NUnmapped || O.NTail;
    uint8_t Flags = (HasAddr ? 0 : FnNoAddress) | (Thunk ? FnThunk : 0) | (Counts ? FnCounts : 0) |
                    (O.Status << 4) | (O.Allocas.empty() ? 0 : FnAllocas);
    size_t FlagsAt = B.size();
    B.u8(Flags);
    if (HasAddr && !B.addr32(O.F))
      B.data_at(FlagsAt) |= FnAddrAbsolute;
    if (Thunk)
      continue;
    B.uleb(Str.get(O.Name));
    B.uleb(reason(O.Reason));
    B.uleb(O.NCalls);
    if (Counts) {
      B.uleb(O.NLoops);
      B.uleb(O.NUnmapped);
      B.uleb(O.NTail);
    }
    if (O.Allocas.empty())
      continue;
    B.uleb(O.Allocas.size());
    for (auto &[Ty, Size, Name] : O.Allocas) {
      B.uleb(ref(Ty));
      B.uleb(Size);
      B.uleb(Str.get(Name));
    }
  }
  for (const GOut &G : Globals) {
    size_t FlagsAt = B.size();
    B.u8(G.Flags);
    if (!(G.Flags & 1) && !B.addr32(G.G))
      B.data_at(FlagsAt) |= GlobalAddrAbsolute;
    B.uleb(G.Size);
    B.uleb(ref(G.Type));
    B.uleb(Str.get(G.G->getName()));
  }
  B.bytes(Str.data());
  B.put32(ChunkSizeAt, B.size());
  GlobalVariable *GV = B.emit(M, "__mappedtrace_map", ".mtmap", /*Alignment=*/1);
  appendToUsed(M, {GV});
}

// Nothing refers to the stack maps (.mtstack, and .llvm_stackmaps when
// MAPPEDTRACE_LLVM_STACKMAPS=1 keeps it), so a link with --gc-sections would
// drop them. A label at the start of this object's section (module asm comes
// first in the output, so it is at offset 0 even if the backend emits no
// record) and a PC-relative reference to it from a retained section
// (SHF_GNU_RETAIN: never collected, no dynamic relocation) keep it, with ld.bfd
// and lld alike. Instrumented code stays whole (.mtmap names every function);
// objects built without the pass and unreferenced data are still collected.
void Emitter::keepStackMapsUnderGC() {
  if (!M.getTargetTriple().isOSBinFormatELF())
    return;
  std::string Asm = std::string(".pushsection ") + StackTableSection +
                    ",\"a\",@progbits\n"
                    ".Lmappedtrace_stacktable:\n"
                    ".popsection\n";
  std::string Keep = ".pushsection .mtmap.keep,\"aR\",@progbits\n"
                     ".long .Lmappedtrace_stacktable - .\n";
  if (keepLLVMStackMaps()) {
    Asm += ".pushsection .llvm_stackmaps,\"a\",@progbits\n"
           ".Lmappedtrace_stackmaps:\n"
           ".popsection\n";
    Keep += ".long .Lmappedtrace_stackmaps - .\n";
  }
  M.appendModuleInlineAsm(Asm + Keep + ".popsection");
}

} // namespace

PreservedAnalyses MappedTracePass::run(Module &M, ModuleAnalysisManager &MAM) {
  if (M.getNamedMetadata(DoneMD))
    return PreservedAnalyses::all();
  if (O0) {
    // FixupStatepointCallerSaved only runs when optimising: at -O0 a deopt value
    // kept "in a register" may sit in a caller-saved one that the call clobbers.
    // Spill them instead (this compiler process builds this module only).
    auto &Opts = cl::getRegisteredOptions();
    auto It = Opts.find("use-registers-for-deopt-values");
    if (It != Opts.end() && It->second)
      static_cast<cl::opt<bool> *>(It->second)->setValue(false);
  }
  Emitter(M, MAM, O0).run();
  return PreservedAnalyses::none();
}

} // namespace mappedtrace
