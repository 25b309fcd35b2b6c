//===- Plugin.cpp - MappedTrace pass plugin entry point and printer ------===//
//
// Registers with the new pass manager:
//   * `mappedtrace`        the module pass (Emitter.cpp);
//   * `print<mappedtrace>` a textual dump of the analysis, for tests:
//       opt-22 -load-pass-plugin=MappedTracePass.so \
//              -passes='print<mappedtrace>' -disable-output x.ll
//   * `mappedtrace` analysis in the function analysis manager;
//   * the pass at OptimizerLast (clang -O0…-O3 with -fpass-plugin; skipped in
//     LTO pre-link phases) and at FullLinkTimeOptimizationLast (lld with
//     --load-pass-plugin, used for Rust via linker-plugin-lto).
// On load it sets the codegen option use-registers-for-deopt-values so deopt
// values stay in (callee-saved) registers instead of being spilled at every
// statepoint (MAPPEDTRACE_DEOPT_IN_REGS=0 turns that off, for measuring).
//===----------------------------------------------------------------------===//
#include "MappedTrace.h"
#include "llvm/Analysis/LoopAnalysisManager.h"
#include "llvm/IR/ModuleSlotTracker.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Plugins/PassPlugin.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include <cstdlib>

using namespace llvm;
using namespace mappedtrace;

namespace mappedtrace {

static void printEntries(raw_ostream &OS, TypeTable &TT, const MapSite &S,
                         ModuleSlotTracker &MST) {
  OS << " values [";
  bool First = true;
  for (const MapEntry &E : S.Entries) {
    if (E.IsSlot)
      continue;
    OS << (First ? "" : ", ");
    First = false;
    E.V->printAsOperand(OS, false, MST);
    if (E.DerivedFrom >= 0) {
      OS << "=";
      S.Entries[E.DerivedFrom].V->printAsOperand(OS, false, MST);
      OS << (E.Offset < 0 ? "" : "+") << E.Offset;
      continue;
    }
    uint64_t Id = E.DI ? TT.pointeeIdOf(E.DI)
                       : (E.IRFallback && isa<StructType>(E.IRFallback) &&
                                  cast<StructType>(E.IRFallback)->hasName()
                              ? TT.idOfIRStructName(E.IRFallback->getStructName())
                              : 0);
    const TypeRec *R = TT.get(Id);
    OS << ":" << (R ? R->Name : std::string("?"));
  }
  OS << "] slots [";
  First = true;
  for (const MapEntry &E : S.Entries) {
    if (!E.IsSlot)
      continue;
    OS << (First ? "" : ", ");
    First = false;
    E.V->printAsOperand(OS, false, MST);
    uint64_t Id = E.DI ? TT.idOf(E.DI) : (E.IRFallback ? TT.idOfIR(E.IRFallback) : 0);
    const TypeRec *R = TT.get(Id);
    OS << ":" << (R ? R->Name : std::string("?"));
  }
  OS << "]\n";
}

PreservedAnalyses MappedTracePrinter::run(Module &M, ModuleAnalysisManager &MAM) {
  auto &FAM = MAM.getResult<FunctionAnalysisManagerModuleProxy>(M).getManager();
  TypeTable TT(M);
  // One slot tracker: printAsOperand without one numbers the whole function
  // again for every operand (minutes on SQLite's 9 000-value sqlite3VdbeExec).
  ModuleSlotTracker MST(&M);
  for (Function &F : M) {
    if (!isCandidate(F))
      continue;
    MST.incorporateFunction(F);
    const FunctionMapInfo &I = FAM.getResult<MappedTraceAnalysis>(F);
    OS << "function " << F.getName() << ": ";
    if (I.Skipped) {
      OS << "skipped (" << I.Reason << ")\n";
      continue;
    }
    OS << (I.Unmapped ? "partial" : "instrumented") << ", " << I.Calls.size()
       << " call sites, " << I.Loops.size() << " loop points, " << I.Unmapped
       << " unmapped calls, " << I.TailCalls << " tail calls\n";
    for (const SlotInfo &S : I.Slots)
      OS << "  slot %" << S.AI->getName() << " '" << S.Name << "' size " << S.Size << "\n";
    unsigned N = 0;
    for (const MapSite &S : I.Calls) {
      auto *CB = cast<CallBase>(S.I);
      OS << "  call #" << N++ << " ";
      if (Function *Callee = CB->getCalledFunction())
        OS << "@" << Callee->getName();
      else
        OS << "<indirect>";
      if (const DebugLoc &DLoc = CB->getDebugLoc())
        OS << " line " << DLoc.getLine();
      OS << ":";
      printEntries(OS, TT, S, MST);
    }
    for (const MapSite &S : I.Loops) {
      OS << "  loop ";
      S.LoopHeader->printAsOperand(OS, false, MST);
      OS << ":";
      printEntries(OS, TT, S, MST);
    }
  }
  return PreservedAnalyses::all();
}

} // namespace mappedtrace

static void setCodegenOptions() {
  const char *Env = std::getenv("MAPPEDTRACE_DEOPT_IN_REGS");
  bool InRegs = !(Env && Env[0] == '0');
  auto &Opts = cl::getRegisteredOptions();
  auto It = Opts.find("use-registers-for-deopt-values");
  if (It != Opts.end() && It->second)
    static_cast<cl::opt<bool> *>(It->second)->setValue(InRegs);
}

static bool isLTOPreLink(ThinOrFullLTOPhase P) {
  return P == ThinOrFullLTOPhase::ThinLTOPreLink || P == ThinOrFullLTOPhase::FullLTOPreLink;
}

static bool debugEP() {
  const char *E = std::getenv("MAPPEDTRACE_DEBUG_EP");
  return E && E[0] == '1';
}

static void registerCallbacks(PassBuilder &PB) {
  setCodegenOptions();
  if (debugEP()) {
    PB.registerPipelineStartEPCallback([](ModulePassManager &, OptimizationLevel) {
      errs() << "mappedtrace: EP PipelineStart\n";
    });
    PB.registerOptimizerEarlyEPCallback(
        [](ModulePassManager &, OptimizationLevel, ThinOrFullLTOPhase P) {
          errs() << "mappedtrace: EP OptimizerEarly phase " << (int)P << "\n";
        });
    PB.registerFullLinkTimeOptimizationEarlyEPCallback(
        [](ModulePassManager &, OptimizationLevel) {
          errs() << "mappedtrace: EP FullLTOEarly\n";
        });
  }
  PB.registerAnalysisRegistrationCallback([](FunctionAnalysisManager &FAM) {
    FAM.registerPass([] { return MappedTraceAnalysis(); });
  });
  PB.registerPipelineParsingCallback(
      [](StringRef Name, ModulePassManager &MPM, ArrayRef<PassBuilder::PipelineElement>) {
        if (Name == "mappedtrace" || Name == "mappedtrace<O0>") {
          MPM.addPass(MappedTracePass(Name.ends_with("<O0>")));
          return true;
        }
        if (Name == "print<mappedtrace>") {
          MPM.addPass(MappedTracePrinter(outs()));
          return true;
        }
        return false;
      });
  PB.registerOptimizerLastEPCallback(
      [](ModulePassManager &MPM, OptimizationLevel L, ThinOrFullLTOPhase P) {
        if (debugEP())
          errs() << "mappedtrace: EP OptimizerLast phase " << (int)P << "\n";
        if (isLTOPreLink(P))
          return; // runs at link time instead, after LTO optimised the code
        MPM.addPass(MappedTracePass(L == OptimizationLevel::O0));
      });
  PB.registerFullLinkTimeOptimizationLastEPCallback(
      [](ModulePassManager &MPM, OptimizationLevel L) {
        if (debugEP())
          errs() << "mappedtrace: EP FullLTOLast\n";
        MPM.addPass(MappedTracePass(L == OptimizationLevel::O0));
      });
}

// Last chance, right before code generation: LTO backends at -O0 (e.g. lld
// running ThinLTO backends for `rustc -C linker-plugin-lto` at opt-level 0)
// build no pipeline with extension points, so the pass runs here unless it
// already ran on this module.
static bool preCodeGen(Module &M, TargetMachine &TM, CodeGenFileType, raw_pwrite_stream &) {
  if (debugEP())
    errs() << "mappedtrace: PreCodeGen\n";
  if (isInstrumented(M))
    return false;
  LoopAnalysisManager LAM;
  FunctionAnalysisManager FAM;
  CGSCCAnalysisManager CGAM;
  ModuleAnalysisManager MAM;
  PassBuilder PB(&TM);
  FAM.registerPass([] { return MappedTraceAnalysis(); });
  PB.registerModuleAnalyses(MAM);
  PB.registerCGSCCAnalyses(CGAM);
  PB.registerFunctionAnalyses(FAM);
  PB.registerLoopAnalyses(LAM);
  PB.crossRegisterProxies(LAM, FAM, CGAM, MAM);
  ModulePassManager MPM;
  MPM.addPass(MappedTracePass(TM.getOptLevel() == CodeGenOptLevel::None));
  MPM.run(M, MAM);
  return false;
}

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo llvmGetPassPluginInfo() {
  PassPluginLibraryInfo Info{LLVM_PLUGIN_API_VERSION, "MappedTrace", "1", registerCallbacks};
  Info.PreCodeGenCallback = preCodeGen;
  return Info;
}
