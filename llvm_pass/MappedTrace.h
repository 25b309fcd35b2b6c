//===- MappedTrace.h - shared declarations of the MappedTrace pass --------===//
//
// The MappedTrace pass plugin has three parts (STYLE.md #10):
//   * MappedTraceAnalysis (Analysis.cpp): per function, which calls become map
//     points, which pointer SSA values and pointer-holding stack slots are live
//     across each of them, which loop headers need a zero-byte map point;
//   * MappedTracePrinter  (Plugin.cpp): `opt -passes='print<mappedtrace>'`;
//   * MappedTracePass     (Emitter.cpp): rewrites calls into statepoints,
//     inserts loop stackmaps and writes the `.mtmap` section (FORMAT.md).
// Types.cpp builds the content-hashed type table from debug metadata.
// PointerStores.cpp finds pointers stored where a type says "no pointer".
//
// Run: opt-22 -load-pass-plugin=MappedTracePass.so -passes=mappedtrace x.ll
//      clang-22 -O2 -g -fpass-plugin=MappedTracePass.so x.c
//===----------------------------------------------------------------------===//
#ifndef MAPPEDTRACE_H
#define MAPPEDTRACE_H

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/IR/DebugInfoMetadata.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/PassManager.h"
#include <map>
#include <set>
#include <string>
#include <vector>

namespace llvm {
class AsmPrinter;
class MCSymbol;
class StackMaps;
} // namespace llvm

namespace mappedtrace {

// FORMAT.md constants.
constexpr uint64_t IdMagic = 0x4D54ULL << 48;
constexpr uint64_t IdKindCall = 1ULL << 40;
constexpr uint64_t IdKindLoop = 2ULL << 40;
constexpr uint64_t IdTagMask = 0xFFFFULL << 48;
// The function entry of this record's function holds its address minus the
// address of the table (Addresses.cpp); without it, the absolute address.
constexpr uint64_t IdRelativeFn = 1ULL << 39;
constexpr uint64_t IdSeqMask = IdRelativeFn - 1;
// .mtmap: version, and the flags of an address written absolute (FORMAT.md §2).
constexpr uint16_t MtmapVersion = 4;
constexpr uint16_t FnAddrAbsolute = 1;
constexpr uint32_t GlobalAddrAbsolute = 4;
// .mtmap version 4: the function entry's flag byte (FORMAT.md §2, "Version 4").
constexpr uint8_t FnNoAddress = 2, FnThunk = 4, FnCounts = 8, FnAllocas = 64;
// .mttypes: one record per type, each in a COMDAT group keyed by its content
// (FORMAT.md §2a); the record's version byte.
constexpr const char *TypeRecordSection = ".mttypes";
constexpr uint8_t TypeRecordVersion = 1;
// Reasons a function is not (fully) instrumented that .mtmap version 4
// writes as a number (index + 1) instead of a string (FORMAT.md §2).
constexpr const char *StdReasons[] = {
    "some calls cannot be mapped (intrinsics lowered to calls, inline asm, musttail, bundles)",
    "the returns_twice call (setjmp) itself is no map point",
    "varargs thunk",
};
constexpr uint64_t StdReasonLimit = 16; // reason numbers below this are StdReasons
// The GC strategy of instrumented functions, and its stack map printer.
constexpr const char *GCStrategyName = "mappedtrace";
// Prefix of the private aliases that name a definition of this object.
constexpr const char *LocalAliasPrefix = "__mappedtrace.local.";
// .mtstack, the compact stack maps (FORMAT.md §1a, StackTable.cpp).
constexpr const char *StackTableSection = ".mtstack";
constexpr const char *StackTableMagic = "MTSK";
constexpr uint16_t StackTableVersion = 2;
constexpr uint64_t RoleValue = 0;
constexpr uint64_t RoleSlot = 1ULL << 62;
constexpr uint64_t RoleDerived = 2ULL << 62;
constexpr uint64_t TypeIdMask = 0x3FFFFFFFFFFFFFFFULL;

enum TypeKind : uint8_t {
  KUnknown = 0, KScalar = 1, KPointer = 2, KStruct = 3, KUnion = 4,
  KArray = 5, KFunction = 6, KEnum = 7
};
enum : uint16_t { THasUnion = 1, TFlex = 2, TErased = 4, TRust = 8 };
enum : uint32_t { SUntyped = 1, SFunction = 2, SConservative = 4, SWeak = 8, SStored = 16 };

struct SlotRec {
  uint64_t Offset = 0, Target = 0;
  uint32_t Count = 1, Stride = 0, Flags = 0;
};

/// A named member of a struct/union/class (FORMAT.md §2 "Fields"): direct
/// members and base classes at their offsets, and the type arguments of a
/// template (offset 0), and the variants of a Rust enum (overlapping), so a
/// reader can name the field a pointer sits in and
/// read a container's length without knowing its layout in advance.
enum : uint32_t { FBase = 1, FTemplateArg = 2, FVariant = 4 };
struct FieldRec {
  uint64_t Offset = 0, Type = 0;
  std::string Name;
  uint32_t Flags = 0;
};

struct TypeRec {
  uint64_t Id = 0, Size = 0;
  std::string Name;
  uint8_t Kind = KUnknown;
  uint16_t Flags = 0;
  std::vector<SlotRec> Slots;
  uint64_t Elem = 0, FlexOffset = 0;
  std::vector<FieldRec> Fields;
};

/// The type table of one module: content-hashed ids (FORMAT.md §3) for
/// debug-info types, with an IR-type fallback. Entries are created on demand
/// and kept for emission.
class TypeTable {
public:
  TypeTable(llvm::Module &M);
  /// Id of the object type \p T (0 for void / unknown).
  uint64_t idOf(const llvm::DIType *T);
  /// Id of what a variable of type \p T points to (0 if not a pointer).
  uint64_t pointeeIdOf(const llvm::DIType *T);
  /// Fallback from an IR type (named `struct.X` matched to debug info).
  uint64_t idOfIR(llvm::Type *T);
  /// Id of a pointee named by an IR struct type (GEP source element type).
  uint64_t idOfIRStructName(llvm::StringRef Name);
  const TypeRec *get(uint64_t Id) const;
  bool hasPointers(uint64_t Id) const;
  /// The definition of the struct/union named \p Name in this module, if any.
  const llvm::DICompositeType *byName(llvm::StringRef Name) const;
  /// The program stores pointers into bytes [Off, Off+Len) of \p C, which its
  /// declared layout calls non-pointer (PointerStores.cpp): C's entry gets
  /// STORED slots there. Call before the first id is computed.
  void addStored(const llvm::DICompositeType *C, uint64_t Off, uint64_t Len);
  /// The id of a copy of type \p Id with STORED words over \p Ranges (a
  /// global of a scalar type that holds pointers).
  uint64_t withStored(uint64_t Id, const std::vector<std::pair<uint64_t, uint64_t>> &Ranges);
  /// Every type, the pending pointees and template arguments built first.
  const std::map<uint64_t, TypeRec> &all() {
    drain();
    return Types;
  }
  bool isRust() const { return Rust; }
  /// The maps refer to type \p Id (a record, an alloca, a global, an
  /// allocation site): it and what it refers to are emitted.
  void use(uint64_t Id) {
    if (Id)
      Used.insert(Id);
  }
  /// The ids to emit: every type used (use()), every type with STORED words
  /// (addStored) and every struct, union or enum definition (another module
  /// may resolve a declaration to it), with the types they refer to
  /// (element, slot targets, fields), transitively.
  std::set<uint64_t> reachable();

private:
  uint64_t idOfDI(const llvm::DIType *T, unsigned Depth);
  uint64_t idOnly(const llvm::DIType *T, unsigned Depth);
  void drain();
  const llvm::DICompositeType *definitionOf(const llvm::DICompositeType *C) const;
  uint64_t namedId(const llvm::DICompositeType *C);
  void content(const llvm::DIType *T, std::string &Out, unsigned Depth, bool Ref) const;
  uint64_t idOfComposite(const llvm::DICompositeType *CT, unsigned Depth);
  uint64_t idOfIRImpl(llvm::Type *T, unsigned Depth);
  uint64_t add(TypeRec R);
  void addField(TypeRec &R, uint64_t Off, uint64_t Type, llvm::StringRef Name,
                uint32_t Flags) const;
  void appendStored(TypeRec &R, const std::vector<std::pair<uint64_t, uint64_t>> &Ranges) const;
  void appendArray(std::vector<SlotRec> &Out, const TypeRec *Elem,
                   uint64_t Off, uint64_t Count, uint64_t ElemSize,
                   uint32_t ExtraFlags);

  const llvm::DataLayout &DL;
  bool Rust = false;
  llvm::DenseMap<const llvm::Metadata *, uint64_t> DIIds;
  llvm::DenseMap<llvm::Type *, uint64_t> IRIds;
  llvm::StringMap<const llvm::DICompositeType *> ByName;
  llvm::DenseMap<const llvm::DICompositeType *, uint64_t> ContentIds; // C types: layout hashes
  std::map<uint64_t, TypeRec> Types;
  std::vector<const llvm::DIType *> Pending; // pointees whose layout is still to build
  // STORED ranges of named types by id (one type may have several nodes in an
  // LTO module), of anonymous ones by node
  std::map<uint64_t, std::vector<std::pair<uint64_t, uint64_t>>> StoredById;
  llvm::DenseMap<const llvm::DICompositeType *, std::vector<std::pair<uint64_t, uint64_t>>> StoredByNode;
  std::set<uint64_t> Used;
  std::vector<const llvm::DICompositeType *> StoredNodes; // addStored's types
};

/// Where the module stores pointers (pointer-typed stores, memcpy/memmove from
/// pointer-holding memory, integers from ptrtoint) into memory whose declared
/// type is not a pointer: recorded in \p TT (struct fields) and \p Globals
/// (byte ranges of scalar globals). PointerStores.cpp.
/// True when the maps give \p GO's address relative to the map itself (a
/// definition that the linker keeps and nothing can interpose): no dynamic
/// relocation. Otherwise the address is written absolute (Addresses.cpp).
bool addressIsRelative(const llvm::GlobalObject &GO);
/// \p GO itself if it has local linkage, else a private alias of it.
llvm::Constant *localAddressOf(llvm::GlobalObject &GO);

/// A function entry of the stack maps: its symbol, the local name its
/// address is written relative to (null: written absolute), and LLVM's counts.
struct StackTableFn {
  const llvm::MCSymbol *Sym = nullptr;
  const llvm::MCSymbol *Local = nullptr;
  uint64_t StackSize = 0, RecordCount = 0;
};
/// Write this object's stack map records to `.mtstack` (StackTable.cpp).
void emitStackTable(llvm::StackMaps &SM, llvm::AsmPrinter &AP, llvm::ArrayRef<StackTableFn> Fns);
/// MAPPEDTRACE_LLVM_STACKMAPS=1: write LLVM's `.llvm_stackmaps` as well.
bool keepLLVMStackMaps();

/// Returns the module's untyped pointer writes (PointerStores.cpp banner).
unsigned findPointerStores(llvm::Module &M, TypeTable &TT,
                           std::map<llvm::GlobalVariable *, std::vector<std::pair<uint64_t, uint64_t>>> &Globals);
/// Is allocation-site recording asked for (MAPPEDTRACE_ALLOC_SITES=1)?
bool allocSitesEnabled();
/// Rewrite the module's malloc/calloc/realloc/aligned_alloc calls into
/// allocation sites and write their records to `.mtsites` (AllocSites.cpp,
/// FORMAT.md §4). Call before the analysis of any function.
/// \p UntypedWrites: what findPointerStores returned (written to the block header).
void recordAllocSites(llvm::Module &M, TypeTable &TT, llvm::FunctionAnalysisManager &FAM,
                      unsigned UntypedWrites);
/// Debug types of pointer SSA values and the variables of allocas (Analysis.cpp).
void collectValueTypes(llvm::Function &F, llvm::DenseMap<llvm::Value *, const llvm::DIType *> &ValueDI,
                       llvm::DenseMap<llvm::AllocaInst *, const llvm::DILocalVariable *> *AllocaVar);
/// Does a value of IR type \p T hold a pointer anywhere?
bool typeHasPointer(llvm::Type *T, unsigned Depth = 0);
/// \p T without typedefs and qualifiers.
const llvm::DIType *stripDI(const llvm::DIType *T);

uint64_t fnv1a(llvm::StringRef S);
std::string hex(uint64_t V);

/// A thing recorded at a map point.
struct MapEntry {
  bool IsSlot = false;
  llvm::Value *V = nullptr;          // pointer SSA value, or the static alloca
  const llvm::DIType *DI = nullptr;  // VALUE: the pointer's type; SLOT: the object type
  llvm::Type *IRFallback = nullptr;  // SLOT: allocated type; VALUE: GEP source struct
  // DERIVED (FORMAT.md §1): V equals the pointer of entry DerivedFrom (an
  // earlier VALUE entry of the same site) plus Offset; nothing is stored.
  int DerivedFrom = -1;
  int64_t Offset = 0;
  // SLOT: every word may hold a pointer whatever the type says (bytes copied
  // or written into the slot by code the pass does not see): STORED words.
  bool AllStored = false;
};

struct MapSite {
  llvm::Instruction *I = nullptr;    // the call/invoke; for a loop point the header's first insertion point
  llvm::BasicBlock *LoopHeader = nullptr;
  llvm::SmallVector<MapEntry, 8> Entries;
};

struct SlotInfo {
  llvm::AllocaInst *AI = nullptr;
  const llvm::DIType *DI = nullptr;
  std::string Name;
  uint64_t Size = 0;
  bool AllStored = false; // see MapEntry::AllStored
};

/// What the analysis finds in one function.
struct FunctionMapInfo {
  bool Skipped = false;
  std::string Reason;                // why skipped, or why partial
  std::vector<MapSite> Calls;        // call sites to rewrite
  std::vector<MapSite> Loops;        // loop headers to map
  std::vector<llvm::CallBase *> VarargCalls; // (subset of Calls' I) need a thunk
  unsigned Unmapped = 0;
  unsigned TailCalls = 0;            // calls in tail position, left plain (nothing live after them)
  std::vector<SlotInfo> Slots;       // pointer-holding static allocas
};

class MappedTraceAnalysis : public llvm::AnalysisInfoMixin<MappedTraceAnalysis> {
  friend llvm::AnalysisInfoMixin<MappedTraceAnalysis>;
  static llvm::AnalysisKey Key;

public:
  using Result = FunctionMapInfo;
  Result run(llvm::Function &F, llvm::FunctionAnalysisManager &FAM);
};

/// Has the pass already instrumented \p M (named metadata marker)?
bool isInstrumented(const llvm::Module &M);

/// Number of pointer lanes/fields of a vector or literal struct SSA type (0 if none).
unsigned aggregatePointerCount(llvm::Type *T);

/// Is \p F a function the pass would look at (defined, emitted here)?
bool isCandidate(const llvm::Function &F);

class MappedTracePrinter : public llvm::PassInfoMixin<MappedTracePrinter> {
  llvm::raw_ostream &OS;

public:
  explicit MappedTracePrinter(llvm::raw_ostream &OS) : OS(OS) {}
  llvm::PreservedAnalyses run(llvm::Module &M, llvm::ModuleAnalysisManager &MAM);
  static bool isRequired() { return true; }
};

class MappedTracePass : public llvm::PassInfoMixin<MappedTracePass> {
  bool O0;

public:
  explicit MappedTracePass(bool O0 = false) : O0(O0) {}
  llvm::PreservedAnalyses run(llvm::Module &M, llvm::ModuleAnalysisManager &MAM);
  static bool isRequired() { return true; }
};

} // namespace mappedtrace

#endif
