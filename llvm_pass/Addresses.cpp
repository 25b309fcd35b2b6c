//===- Addresses.cpp - position-independent addresses in the map sections -===//
//
// The maps must need no dynamic relocation, so that `-fPIC -shared` and PIE
// binaries get no DT_TEXTREL and the map sections stay read-only data
// (FORMAT.md, "Addresses"). `.mtmap` is an IR constant and writes its
// addresses itself as differences (Emitter.cpp). `.llvm_stackmaps` is
// written by LLVM's StackMaps, whose function entries hold an absolute
// `.quad <function>`; this file changes only that field:
//
//   * the GC strategy "mappedtrace" is LLVM's "statepoint-example" (managed
//     pointers are addrspace(1) only) that also asks for a metadata printer;
//   * its printer runs when the AsmPrinter writes the stack maps, before
//     LLVM's own serializer (StackMaps::serializeToStackMapSection, which
//     still writes the table), and replaces the symbol of each function
//     entry whose records carry IdRelativeFn with an assembler symbol equal
//     to `<local symbol of the function> - __LLVM_StackMaps` (the start of
//     this object's table): a PC-relative fixup against a local symbol that
//     the static linker resolves, so the field reads "function address minus
//     table address".
//
// A function entry keeps its absolute address when the pass did not mark its
// records (an exported comdat function in code that may go into a shared
// library, see addressIsRelative).
//
// The printer is found by name when code is generated: IR that carries
// `gc "mappedtrace"` must be compiled with this plugin loaded
// (`llc -load=MappedTracePass.so`, or clang/lld with the plugin).
//===----------------------------------------------------------------------===//
#include "MappedTrace.h"
#include "llvm/CodeGen/AsmPrinter.h"
#include "llvm/CodeGen/GCMetadata.h"
#include "llvm/CodeGen/GCMetadataPrinter.h"
#include "llvm/CodeGen/StackMaps.h"
#include "llvm/IR/GCStrategy.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/MCContext.h"
#include "llvm/MC/MCExpr.h"
#include "llvm/MC/MCStreamer.h"

using namespace llvm;

namespace mappedtrace {

// A local name (a private alias, assembled as a section-relative fixup)
// names this object's definition. A comdat member may be dropped by the
// linker in favour of another object's copy, and a fixup against a local
// symbol in a dropped section is a link error; a common symbol has no
// section. Those must be named by their own symbol. (A weak definition
// outside a comdat stays in the output even when another one wins: its
// local name still names its own code.)
static bool localNameIsSafe(const GlobalObject &GO) {
  return !GO.hasComdat() && !GO.hasCommonLinkage();
}

// Whether a PC-relative fixup may name GO's own symbol: in code for an
// executable (no PIC, or PIE) nothing is interposed; elsewhere only a symbol
// that is not exported as preemptible (hidden or protected) qualifies.
static bool ownNameIsSafe(const GlobalObject &GO) {
  const Module &M = *GO.getParent();
  return M.getPICLevel() == PICLevel::NotPIC || M.getPIELevel() != PIELevel::Default ||
         !GO.hasDefaultVisibility();
}

bool addressIsRelative(const GlobalObject &GO) {
  if (GO.isDeclarationForLinker() || GO.isThreadLocal())
    return false;
  return localNameIsSafe(GO) || ownNameIsSafe(GO);
}

Constant *localAddressOf(GlobalObject &GO) {
  if (GO.hasLocalLinkage() || !localNameIsSafe(GO))
    return &GO; // then ownNameIsSafe holds (addressIsRelative)
  // A private alias: assembled as `.set .Lname, sym`, and a fixup against it
  // uses the section symbol, so the definition in this object is meant even
  // where the dynamic linker would let another module interpose `sym`.
  std::string Name = (LocalAliasPrefix + GO.getName()).str();
  Module &M = *GO.getParent();
  if (GlobalAlias *A = M.getNamedAlias(Name); A && A->getAliaseeObject() == &GO)
    return A;
  return GlobalAlias::create(GO.getValueType(), GO.getAddressSpace(),
                             GlobalValue::PrivateLinkage, Name, &GO, &M);
}

namespace {

class MappedTraceGC : public GCStrategy {
public:
  MappedTraceGC() {
    UseStatepoints = true;
    UseRS4GC = true;
    NeededSafePoints = false;
    UsesMetadata = true; // so that the AsmPrinter asks for our printer
  }
  std::optional<bool> isGCManagedPointer(const Type *Ty) const override {
    if (!Ty->isPointerTy())
      return std::nullopt;
    return Ty->getPointerAddressSpace() == 1;
  }
};

class MappedTraceGCPrinter : public GCMetadataPrinter {
public:
  void beginAssembly(Module &Mod, GCModuleInfo &, AsmPrinter &) override { M = &Mod; }
  bool emitStackMaps(StackMaps &SM, AsmPrinter &AP) override;

private:
  Module *M = nullptr;
};

bool MappedTraceGCPrinter::emitStackMaps(StackMaps &SM, AsmPrinter &AP) {
  StackMaps::FnInfoMap &Fns = SM.getFnInfos();
  StackMaps::CallsiteInfoList &Records = SM.getCSInfos();
  if (Fns.empty() || !M)
    return false;
  MCContext &Ctx = AP.OutContext;
  bool KeepLLVM = keepLLVMStackMaps();
  // The label serializeToStackMapSection puts at the start of the table.
  MCSymbol *Table = Ctx.getOrCreateSymbol("__LLVM_StackMaps");
  DenseMap<const MCSymbol *, GlobalObject *> ByFnSym;
  for (Function &F : *M)
    if (!F.isDeclaration())
      ByFnSym[AP.getSymbol(&F)] = &F;
  StackMaps::FnInfoMap Out;
  std::vector<StackTableFn> Compact;
  size_t First = 0; // records are listed function by function, in entry order
  for (auto &[Sym, Info] : Fns) {
    size_t End = std::min(First + (size_t)Info.RecordCount, Records.size());
    bool Rel = false;
    for (size_t I = First; I < End; ++I)
      if ((Records[I].ID & IdTagMask) == IdMagic)
        Rel = Records[I].ID & IdRelativeFn;
    GlobalObject *GO = ByFnSym.lookup(Sym);
    const MCSymbol *Key = Sym;
    StackTableFn CF{Sym, nullptr, Info.StackSize, Info.RecordCount};
    if (Rel && GO && addressIsRelative(*GO)) {
      // `.set .Lmt_fn, f`: a local name for f, so the fixups below are made
      // against the section symbol (this object's definition, resolved by the
      // static linker), never against f itself, which another module could
      // interpose. A comdat f is named itself (where ownNameIsSafe:
      // addressIsRelative).
      MCSymbol *Local = const_cast<MCSymbol *>(Sym);
      if (localNameIsSafe(*GO)) {
        Local = Ctx.createTempSymbol("mt_fn");
        AP.OutStreamer->emitAssignment(Local, MCSymbolRefExpr::create(Sym, Ctx));
      }
      CF.Local = Local;
      if (KeepLLVM) {
        MCSymbol *S = Ctx.createTempSymbol("mt_fn_rel");
        AP.OutStreamer->emitAssignment(
            S, MCBinaryExpr::createSub(MCSymbolRefExpr::create(Local, Ctx),
                                       MCSymbolRefExpr::create(Table, Ctx), Ctx));
        Key = S;
      }
    } else if (Rel) {
      // No local symbol after all: leave the absolute address and say so in
      // the records, so that a reader takes the field as absolute.
      for (size_t I = First; I < End; ++I)
        Records[I].ID &= ~IdRelativeFn;
    }
    Compact.push_back(CF);
    Out.insert({Key, Info});
    First = End;
  }
  // The compact table (.mtstack, FORMAT.md §1a) always; LLVM's own table
  // only when asked for: returning true tells the AsmPrinter it is written.
  emitStackTable(SM, AP, Compact);
  if (!KeepLLVM)
    return true;
  Fns = std::move(Out);
  return false; // LLVM's serializer writes the table
}

GCRegistry::Add<MappedTraceGC> RegGC(GCStrategyName, "MappedTrace: statepoints, relative stack map addresses");
GCMetadataPrinterRegistry::Add<MappedTraceGCPrinter>
    RegPrinter(GCStrategyName, "MappedTrace: compact stack maps (.mtstack), relative function addresses");

} // namespace
} // namespace mappedtrace
