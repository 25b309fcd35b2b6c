//===- Types.cpp - MappedTrace type table from debug metadata -------------===//
//
// Builds the `.mtmap` type table (FORMAT.md §2, ids per §3) from DIType
// nodes: pointer slots flattened into count/stride runs, pointee ids,
// UNTYPED for void*/char*/u8*, FUNCTION for code pointers, CONSERVATIVE for
// union members and Rust enum variants, FLEX for trailing flexible arrays,
// ERASED for Rust Vec/String/RawVec. Recursion is bounded (depth, slots per
// type); named types are memoised before their members are visited, so
// cycles through named types terminate. An IR-type fallback exists for
// values and slots without debug info.
//===----------------------------------------------------------------------===//
#include "MappedTrace.h"
#include "llvm/BinaryFormat/Dwarf.h"
#include "llvm/IR/DataLayout.h"
#include "llvm/IR/DebugInfo.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/ADT/STLExtras.h"
#include <algorithm>
#include <set>
#include <tuple>

using namespace llvm;

namespace mappedtrace {

static constexpr unsigned MaxDepth = 48;
static constexpr size_t MaxSlotsPerType = 4096;
static constexpr uint64_t MaxUnrolledRuns = 64;
static constexpr size_t MaxTypes = 50000;
static constexpr size_t MaxFieldsPerType = 1024;

uint64_t fnv1a(StringRef S) {
  uint64_t H = 0xcbf29ce484222325ULL;
  for (unsigned char C : S) {
    H ^= C;
    H *= 0x100000001b3ULL;
  }
  H &= TypeIdMask;
  return H ? H : 1;
}

std::string hex(uint64_t V) {
  std::string S;
  raw_string_ostream OS(S);
  OS << format_hex_no_prefix(V, 1);
  return S;
}

TypeTable::TypeTable(Module &M) : DL(M.getDataLayout()) {
  DebugInfoFinder F;
  F.processModule(M);
  for (DICompileUnit *CU : F.compile_units())
    if (CU->getSourceLanguage().getUnversionedName() == dwarf::DW_LANG_Rust)
      Rust = true;
  for (const DIType *T : F.types()) {
    auto *CT = dyn_cast<DICompositeType>(T);
    if (!CT || CT->isForwardDecl() || CT->getName().empty())
      continue;
    unsigned Tag = CT->getTag();
    if (Tag != dwarf::DW_TAG_structure_type && Tag != dwarf::DW_TAG_union_type &&
        Tag != dwarf::DW_TAG_class_type)
      continue;
    ByName.try_emplace(CT->getName(), CT);
  }
}

const DICompositeType *TypeTable::byName(StringRef Name) const {
  auto It = ByName.find(Name);
  return It == ByName.end() ? nullptr : It->second;
}


// STORED slots (FORMAT.md §2): every 8-aligned word that overlaps a range and
// lies inside the object, unless a slot already covers it. A stored pointer
// is found only at an aligned word: an unaligned one is missed by every
// scanner (conservative ones too).
void TypeTable::appendStored(TypeRec &R, const std::vector<std::pair<uint64_t, uint64_t>> &Ranges) const {
  std::set<uint64_t> Have, Words;
  for (const SlotRec &S : R.Slots)
    for (uint64_t I = 0; I < S.Count && I < MaxSlotsPerType; ++I)
      Have.insert(S.Offset + I * S.Stride);
  for (auto [Lo, Hi] : Ranges)
    for (uint64_t W = Lo & ~7ULL; W < Hi && W + 8 <= R.Size && Words.size() < MaxSlotsPerType; W += 8)
      if (!Have.count(W))
        Words.insert(W);
  // one run per stretch of consecutive words
  for (auto It = Words.begin(); It != Words.end();) {
    SlotRec S;
    S.Offset = *It;
    S.Flags = SUntyped | SConservative | SStored;
    uint64_t Next = *It + 8;
    S.Count = 1;
    for (++It; It != Words.end() && *It == Next && S.Count < UINT32_MAX; ++It, Next += 8)
      ++S.Count;
    S.Stride = S.Count > 1 ? 8 : 0;
    R.Slots.push_back(S);
  }
}

uint64_t TypeTable::withStored(uint64_t Id, const std::vector<std::pair<uint64_t, uint64_t>> &Ranges) {
  const TypeRec *Base = get(Id);
  if (!Base)
    return Id;
  TypeRec R = *Base;
  appendStored(R, Ranges);
  llvm::sort(R.Slots, [](const SlotRec &A, const SlotRec &B) {
    return std::tie(A.Offset, A.Flags, A.Target) < std::tie(B.Offset, B.Flags, B.Target);
  });
  std::string Key = "stored:" + hex(Id) + ":";
  for (const SlotRec &S : R.Slots)
    if (S.Flags & SStored)
      Key += std::to_string(S.Offset) + "x" + std::to_string(S.Count) + ",";
  R.Id = fnv1a(Key);
  if (R.Kind == KScalar || R.Kind == KPointer)
    R.Kind = KStruct; // a layout of its own now (a scalar global with stored words)
  return add(std::move(R));
}

const TypeRec *TypeTable::get(uint64_t Id) const {
  auto It = Types.find(Id);
  return It == Types.end() ? nullptr : &It->second;
}

bool TypeTable::hasPointers(uint64_t Id) const {
  const TypeRec *R = get(Id);
  return R && (!R->Slots.empty() || (R->Flags & TFlex && hasPointers(R->Elem)) ||
               R->Kind == KUnknown);
}

uint64_t TypeTable::add(TypeRec R) {
  uint64_t Id = R.Id;
  Types.emplace(Id, std::move(R)); // first definition wins
  return Id;
}

static const DIType *strip(const DIType *T) {
  for (unsigned I = 0; T && I < 64; ++I) {
    auto *D = dyn_cast<DIDerivedType>(T);
    if (!D)
      return T;
    switch (D->getTag()) {
    case dwarf::DW_TAG_typedef:
    case dwarf::DW_TAG_const_type:
    case dwarf::DW_TAG_volatile_type:
    case dwarf::DW_TAG_restrict_type:
    case dwarf::DW_TAG_atomic_type:
    case dwarf::DW_TAG_immutable_type:
      T = D->getBaseType();
      continue;
    default:
      return T;
    }
  }
  return T;
}

const DIType *stripDI(const DIType *T) { return strip(T); }

static bool isPointerTag(unsigned Tag) {
  return Tag == dwarf::DW_TAG_pointer_type || Tag == dwarf::DW_TAG_reference_type ||
         Tag == dwarf::DW_TAG_rvalue_reference_type;
}

// char, signed char, unsigned char, u8, i8: a pointer to them is untyped.
static bool isByteType(const DIType *T) {
  auto *B = dyn_cast_or_null<DIBasicType>(T);
  if (!B || B->getSizeInBits() != 8)
    return false;
  unsigned E = B->getEncoding();
  return E == dwarf::DW_ATE_signed_char || E == dwarf::DW_ATE_unsigned_char ||
         E == dwarf::DW_ATE_signed || E == dwarf::DW_ATE_unsigned;
}

// "a::b::" for a type declared in namespace (Rust module, C++ namespace) or
// type a::b; empty at file scope (C).
static std::string scopePrefix(const DIScope *S) {
  std::string P;
  for (unsigned Depth = 0; S && Depth < 16; S = S->getScope(), ++Depth) {
    StringRef N;
    if (auto *NS = dyn_cast<DINamespace>(S))
      N = NS->getName();
    else if (auto *CT = dyn_cast<DICompositeType>(S))
      N = CT->getName();
    else
      break; // a file, compile unit or function
    if (!N.empty())
      P = N.str() + "::" + P;
  }
  return P;
}

static std::string typeName(const DIType *T, unsigned Depth = 0) {
  T = strip(T);
  if (!T)
    return "void";
  if (Depth > 8)
    return "?";
  if (auto *D = dyn_cast<DIDerivedType>(T)) {
    if (isPointerTag(D->getTag()))
      return typeName(D->getBaseType(), Depth + 1) + "*";
    return typeName(D->getBaseType(), Depth + 1);
  }
  if (auto *C = dyn_cast<DICompositeType>(T)) {
    std::string N = C->getName().str();
    if (!N.empty())
      N = scopePrefix(C->getScope()) + N;
    switch (C->getTag()) {
    case dwarf::DW_TAG_structure_type:
      return N.empty() ? "struct <anon>" : (C->getRuntimeLang() || N.find(':') != std::string::npos || N.find('<') != std::string::npos ? N : "struct " + N);
    case dwarf::DW_TAG_union_type:
      return "union " + (N.empty() ? std::string("<anon>") : N);
    case dwarf::DW_TAG_enumeration_type:
      return "enum " + (N.empty() ? std::string("<anon>") : N);
    case dwarf::DW_TAG_array_type:
      return typeName(C->getBaseType(), Depth + 1) + "[]";
    default:
      return N.empty() ? "<anon>" : N;
    }
  }
  if (isa<DISubroutineType>(T))
    return "fn";
  return T->getName().str();
}

static std::string namedKind(const DICompositeType *C) {
  switch (C->getTag()) {
  case dwarf::DW_TAG_union_type:
    return "union";
  case dwarf::DW_TAG_class_type:
    return "class";
  default:
    return "struct";
  }
}

static bool isNamedAggregate(const DICompositeType *C) {
  unsigned Tag = C->getTag();
  return (Tag == dwarf::DW_TAG_structure_type || Tag == dwarf::DW_TAG_class_type ||
          Tag == dwarf::DW_TAG_union_type) &&
         (!C->getIdentifier().empty() || !C->getName().empty());
}

static constexpr size_t MaxContentBytes = 1 << 18;

// The declared layout of T as a canonical string (FORMAT.md §3): members with
// offsets, bit sizes and types, nested aggregates inline, a pointer to a named
// aggregate by the pointee's name only. Not following pointees keeps the
// string the same in a translation unit that only declares the pointee (an
// opaque `struct x *`) and one that defines it. Known imprecision: two
// layouts identical but for what same-named pointees look like share an id
// (the tracer then warns and keeps the first); each layout of a pointee is
// still a type of its own.
void TypeTable::content(const DIType *T, std::string &Out, unsigned Depth, bool Ref) const {
  T = strip(T);
  if (!T) {
    Out += "v";
    return;
  }
  if (Depth > MaxDepth || Out.size() > MaxContentBytes) {
    Out += "?";
    return;
  }
  if (auto *B = dyn_cast<DIBasicType>(T)) {
    Out += "b" + B->getName().str() + ":" + std::to_string(B->getSizeInBits()) + ";";
    return;
  }
  if (auto *D = dyn_cast<DIDerivedType>(T)) {
    if (isPointerTag(D->getTag())) {
      Out += "p(";
      content(D->getBaseType(), Out, Depth + 1, true);
      Out += ")";
    } else if (D->getTag() == dwarf::DW_TAG_ptr_to_member_type) {
      Out += "m" + std::to_string(D->getSizeInBits()) + ";";
    } else {
      content(D->getBaseType(), Out, Depth + 1, Ref);
    }
    return;
  }
  if (isa<DISubroutineType>(T)) {
    Out += "f;";
    return;
  }
  auto *C = dyn_cast<DICompositeType>(T);
  if (!C) {
    Out += "s" + std::to_string(T->getSizeInBits()) + ";";
    return;
  }
  unsigned Tag = C->getTag();
  if (Tag == dwarf::DW_TAG_enumeration_type) {
    Out += "e" + C->getName().str() + ":" + std::to_string(C->getSizeInBits()) + ";";
    return;
  }
  if (Tag == dwarf::DW_TAG_array_type) {
    Out += "a" + std::to_string(C->getSizeInBits()) + "[";
    content(C->getBaseType(), Out, Depth + 1, Ref);
    Out += "]";
    return;
  }
  if (isNamedAggregate(C)) {
    std::string Head = namedKind(C) + " " + C->getName().str();
    if (Ref || C->isForwardDecl()) {
      Out += "n" + Head + ";"; // a pointee: by name
      return;
    }
    Out += "{" + Head + ":" + std::to_string(C->getSizeInBits()) + ":";
  } else {
    Out += "{" + std::to_string(Tag) + ":" + std::to_string(C->getSizeInBits()) + ":";
  }
  for (const DINode *N : C->getElements()) {
    if (auto *Mem = dyn_cast_or_null<DIDerivedType>(N)) {
      if (Mem->isStaticMember())
        continue;
      Out += std::to_string(Mem->getOffsetInBits());
      if (Mem->isBitField())
        Out += "/" + std::to_string(Mem->getSizeInBits());
      Out += "=";
      content(Mem->getBaseType(), Out, Depth + 1, false);
    } else if (auto *VP = dyn_cast_or_null<DICompositeType>(N)) {
      content(VP, Out, Depth + 1, false); // a variant part
    }
  }
  Out += "}";
}

// FORMAT.md §3 id of a named struct/union/class. With a unique identifier
// (Rust, C++ ODR names): "<kind>:<identifier>". Without (C): a hash of the
// declared layout, so two different `struct dict` of two translation units
// are two types and the same one is one type. A type declared but not
// defined in this module (opaque `struct x *`) gets "decl:<kind>:<name>"
// and an UNKNOWN entry: the tracer resolves it by name when the program
// defines exactly one layout under that name.
uint64_t TypeTable::namedId(const DICompositeType *C) {
  if (!C->getIdentifier().empty())
    return fnv1a(namedKind(C) + ":" + C->getIdentifier().str());
  C = definitionOf(C);
  if (C->isForwardDecl())
    return fnv1a("decl:" + namedKind(C) + ":" + C->getName().str());
  auto It = ContentIds.find(C);
  if (It != ContentIds.end())
    return It->second;
  std::string Key = "c:";
  content(C, Key, 0, false);
  uint64_t Id = fnv1a(Key);
  ContentIds[C] = Id;
  return Id;
}

void TypeTable::addStored(const DICompositeType *C, uint64_t Off, uint64_t Len) {
  if (!C || !Len)
    return;
  StoredNodes.push_back(C);
  if (isNamedAggregate(C))
    StoredById[namedId(C)].push_back({Off, Off + Len});
  else
    StoredByNode[C].push_back({Off, Off + Len});
}

const DICompositeType *TypeTable::definitionOf(const DICompositeType *C) const {
  if (!C->isForwardDecl())
    return C;
  auto It = ByName.find(C->getName());
  return It != ByName.end() ? It->second : C;
}

uint64_t TypeTable::idOnly(const DIType *T, unsigned Depth) {
  T = strip(T);
  if (auto *C = dyn_cast_or_null<DICompositeType>(T); C && isNamedAggregate(C)) {
    C = definitionOf(C);
    if (!DIIds.count(C))
      Pending.push_back(C);
    return namedId(C);
  }
  return idOfDI(T, Depth);
}

void TypeTable::drain() {
  while (!Pending.empty() && Types.size() < MaxTypes) {
    const DIType *T = Pending.back();
    Pending.pop_back();
    idOfDI(T, 0);
  }
}

uint64_t TypeTable::idOf(const DIType *T) {
  uint64_t Id = idOfDI(T, 0);
  drain();
  return Id;
}

uint64_t TypeTable::pointeeIdOf(const DIType *T) {
  T = strip(T);
  auto *D = dyn_cast_or_null<DIDerivedType>(T);
  if (!D || !isPointerTag(D->getTag()))
    return 0;
  const DIType *B = strip(D->getBaseType());
  if (!B || isByteType(B) || isa<DISubroutineType>(B))
    return 0;
  uint64_t Id = idOnly(B, 0);
  drain();
  return Id;
}

void TypeTable::addField(TypeRec &R, uint64_t Off, uint64_t Type, StringRef Name,
                         uint32_t Flags) const {
  if (R.Fields.size() < MaxFieldsPerType)
    R.Fields.push_back({Off, Type, Name.str(), Flags});
}

void TypeTable::appendArray(std::vector<SlotRec> &Out, const TypeRec *Elem,
                            uint64_t Off, uint64_t Count, uint64_t ElemSize,
                            uint32_t ExtraFlags) {
  if (!Elem || Count == 0)
    return;
  Count = std::min<uint64_t>(Count, UINT32_MAX);
  for (const SlotRec &S : Elem->Slots) {
    if (Out.size() >= MaxSlotsPerType)
      return;
    SlotRec N = S;
    N.Flags |= ExtraFlags;
    N.Offset = Off + S.Offset;
    if (S.Count == 1) {
      N.Count = (uint32_t)Count;
      N.Stride = Count > 1 ? (uint32_t)ElemSize : 0;
      Out.push_back(N);
    } else if ((uint64_t)S.Stride * S.Count == ElemSize &&
               (uint64_t)S.Count * Count <= UINT32_MAX) {
      // The element is itself a contiguous run: one longer run.
      N.Count = (uint32_t)(S.Count * Count);
      Out.push_back(N);
    } else {
      // Unroll up to a bound; beyond it the rest of the array is not typed
      // (the tracer scans what the table does not describe conservatively
      // only if the type says so; we mark the element run conservative).
      uint64_t Runs = std::min<uint64_t>(Count, MaxUnrolledRuns);
      for (uint64_t I = 0; I < Runs && Out.size() < MaxSlotsPerType; ++I) {
        N.Offset = Off + I * ElemSize + S.Offset;
        Out.push_back(N);
      }
    }
  }
}

uint64_t TypeTable::idOfDI(const DIType *T, unsigned Depth) {
  T = strip(T);
  if (!T || Depth > MaxDepth)
    return 0;
  auto It = DIIds.find(T);
  if (It != DIIds.end())
    return It->second;
  uint64_t Id = 0;
  // A scalar (base type, or anything without pointers we do not model).
  auto Scalar = [&](const DIType *S) {
    TypeRec R;
    R.Size = S->getSizeInBits() / 8;
    R.Name = S->getName().str();
    R.Kind = KScalar;
    R.Id = fnv1a("base:" + R.Name + ":" + std::to_string(R.Size));
    return add(std::move(R));
  };
  if (auto *B = dyn_cast<DIBasicType>(T)) {
    Id = Scalar(B);
  } else if (auto *D = dyn_cast<DIDerivedType>(T)) {
    if (isPointerTag(D->getTag()) || D->getTag() == dwarf::DW_TAG_ptr_to_member_type) {
      const DIType *Base = strip(D->getBaseType());
      TypeRec R;
      R.Size = D->getSizeInBits() ? D->getSizeInBits() / 8 : 8;
      R.Kind = KPointer;
      R.Name = typeName(T);
      SlotRec S;
      if (D->getTag() == dwarf::DW_TAG_ptr_to_member_type) {
        R.Id = fnv1a("ptrmem:" + std::to_string(R.Size));
        R.Kind = KScalar; // an offset or a code pointer pair: never a heap pointer
      } else if (!Base) {
        R.Id = fnv1a("ptr:void");
        S.Flags = SUntyped;
        R.Slots.push_back(S);
      } else if (isa<DISubroutineType>(Base)) {
        R.Id = fnv1a("ptr:fn");
        S.Flags = SFunction;
        R.Slots.push_back(S);
      } else {
        // Only the pointee's id here; its layout is built later from the
        // pending list, so by-value recursion never meets a half-built type.
        uint64_t Pointee = idOnly(Base, Depth + 1);
        R.Id = fnv1a("ptr:" + (Pointee ? hex(Pointee) : std::string("void")));
        S.Target = Pointee;
        if (isByteType(Base) || !Pointee)
          S.Flags = SUntyped;
        R.Slots.push_back(S);
      }
      if (R.Size < 8) // a 32-bit pointer or a ptr-to-member cannot hold a 64-bit pointer
        R.Slots.clear();
      Id = add(std::move(R));
    } else if (D->getTag() == dwarf::DW_TAG_member ||
               D->getTag() == dwarf::DW_TAG_inheritance) {
      Id = idOfDI(D->getBaseType(), Depth + 1);
    } else {
      Id = idOfDI(D->getBaseType(), Depth + 1);
    }
  } else if (auto *C = dyn_cast<DICompositeType>(T)) {
    Id = idOfComposite(C, Depth);
  } else if (isa<DISubroutineType>(T)) {
    TypeRec R;
    R.Kind = KFunction;
    R.Name = "fn";
    R.Id = fnv1a("fn");
    Id = add(std::move(R));
  } else {
    Id = Scalar(T);
  }
  DIIds[T] = Id;
  return Id;
}

static bool isErasedRustName(StringRef N) {
  for (StringRef P : {"Vec<", "RawVec<", "RawVecInner", "String", "VecDeque<",
                      "alloc::vec::Vec<", "alloc::string::String",
                      "alloc::raw_vec::RawVec"})
    if (N.starts_with(P))
      return true;
  return false;
}

uint64_t TypeTable::idOfComposite(const DICompositeType *C, unsigned Depth) {
  unsigned Tag = C->getTag();
  uint64_t Size = C->getSizeInBits() / 8;
  if (Tag == dwarf::DW_TAG_enumeration_type) {
    TypeRec R;
    R.Size = Size;
    R.Kind = KScalar;
    R.Name = typeName(C);
    R.Id = fnv1a("enum:" + C->getName().str() + ":" + std::to_string(Size));
    return add(std::move(R));
  }
  if (Tag == dwarf::DW_TAG_array_type) {
    const DIType *ElemT = strip(C->getBaseType());
    uint64_t ElemId = idOfDI(ElemT, Depth + 1);
    uint64_t Count = 1;
    bool Unknown = false;
    for (const DINode *E : C->getElements()) {
      auto *SR = dyn_cast_or_null<DISubrange>(E);
      if (!SR) {
        Unknown = true;
        break;
      }
      auto Cnt = SR->getCount();
      auto *CI = dyn_cast_if_present<ConstantInt *>(Cnt);
      if (!CI || CI->isNegative()) {
        Unknown = true;
        break;
      }
      Count *= CI->getZExtValue();
    }
    TypeRec R;
    R.Kind = KArray;
    R.Elem = ElemId;
    R.Name = typeName(C);
    uint64_t ElemSize = ElemT ? ElemT->getSizeInBits() / 8 : 0;
    if (Unknown || Count == 0) {
      R.Size = 0;
      R.Id = fnv1a("arr:" + hex(ElemId) + ":flex");
      R.Flags = TFlex;
      return add(std::move(R));
    }
    R.Size = Size ? Size : ElemSize * Count;
    R.Id = fnv1a("arr:" + hex(ElemId) + ":" + std::to_string(Count));
    if (DIIds.count(C))
      return DIIds[C];
    const TypeRec *E = get(ElemId);
    if (E) {
      if (E->Flags & THasUnion)
        R.Flags |= THasUnion;
      appendArray(R.Slots, E, 0, Count, ElemSize ? ElemSize : E->Size, 0);
    }
    return add(std::move(R));
  }
  bool IsUnion = Tag == dwarf::DW_TAG_union_type;
  bool IsVariantPart = Tag == dwarf::DW_TAG_variant_part;
  if (C->isForwardDecl() && definitionOf(C) != C)
    return idOfDI(definitionOf(C), Depth + 1);
  TypeRec R;
  R.Size = Size;
  R.Name = typeName(C);
  if (Rust && StringRef(R.Name).starts_with("struct "))
    R.Name = R.Name.substr(7); // Rust names carry no C tag
  R.Kind = IsUnion ? KUnion : KStruct;
  if (Rust)
    R.Flags |= TRust;
  std::string Kind = IsUnion ? "union" : (Tag == dwarf::DW_TAG_class_type ? "class" : "struct");
  StringRef Ident = C->getIdentifier();
  StringRef Name = C->getName();
  bool Named = !Ident.empty() || !Name.empty();
  if (C->isForwardDecl()) {
    // Declared only: an UNKNOWN entry under its decl id and name (a reader
    // resolves it to the one definition of that name, if there is one).
    R.Id = namedId(C);
    R.Kind = KUnknown;
    R.Size = 0;
    DIIds[C] = R.Id;
    return add(std::move(R));
  }
  if (Named) {
    R.Id = namedId(C);
    if (Types.count(R.Id)) { // same type seen through another node
      DIIds[C] = R.Id;
      return R.Id;
    }
    DIIds[C] = R.Id; // memoise before visiting members (cycles)
    // Reserve the entry so recursive visits see a definition; filled below.
    Types.emplace(R.Id, R);
  }
  std::string Anon = "anon:" + Kind + ":" + std::to_string(Size) + ":";
  const DINodeArray Elems = C->getElements();
  for (unsigned I = 0, N = Elems.size(); I < N; ++I) {
    auto *Mem = dyn_cast_or_null<DIDerivedType>(Elems[I]);
    if (auto *VP = dyn_cast_or_null<DICompositeType>(Elems[I]);
        VP && VP->getTag() == dwarf::DW_TAG_variant_part) {
      // Rust enum with data: every variant's pointers may or may not be there.
      R.Kind = KEnum;
      R.Flags |= THasUnion;
      for (const DINode *V : VP->getElements()) {
        auto *VM = dyn_cast_or_null<DIDerivedType>(V);
        if (!VM)
          continue;
        uint64_t VId = idOfDI(VM->getBaseType(), Depth + 1);
        addField(R, VM->getOffsetInBits() / 8, VId, VM->getName(), FVariant);
        if (const TypeRec *VR = get(VId))
          appendArray(R.Slots, VR, VM->getOffsetInBits() / 8, 1, VR->Size, SConservative);
        Anon += std::to_string(VM->getOffsetInBits() / 8) + "=" + hex(VId) + ",";
      }
      continue;
    }
    if (!Mem)
      continue;
    if (Mem->getTag() != dwarf::DW_TAG_member && Mem->getTag() != dwarf::DW_TAG_inheritance)
      continue;
    if (Mem->isStaticMember() || Mem->isBitField())
      continue;
    uint64_t Off = Mem->getOffsetInBits() / 8;
    const DIType *MT = strip(Mem->getBaseType());
    // A trailing array of unknown size: a flexible array member.
    if (auto *AT = dyn_cast_or_null<DICompositeType>(MT);
        AT && AT->getTag() == dwarf::DW_TAG_array_type && I + 1 == N && !IsUnion) {
      uint64_t AId = idOfDI(AT, Depth + 1);
      const TypeRec *AR = get(AId);
      if (AR && (AR->Flags & TFlex)) {
        R.Flags |= TFlex;
        R.Elem = AR->Elem;
        R.FlexOffset = Off;
        Anon += std::to_string(Off) + "=" + hex(AId) + ",";
        addField(R, Off, AId, Mem->getName(), 0);
        continue;
      }
    }
    uint64_t MId = idOfDI(MT, Depth + 1);
    Anon += std::to_string(Off) + "=" + hex(MId) + ",";
    addField(R, Off, MId, Mem->getName(),
             Mem->getTag() == dwarf::DW_TAG_inheritance ? FBase : 0);
    const TypeRec *MR = get(MId);
    if (!MR)
      continue;
    uint32_t Extra = IsUnion || IsVariantPart ? SConservative : 0;
    if (IsUnion && !MR->Slots.empty())
      R.Flags |= THasUnion;
    if (MR->Flags & THasUnion)
      R.Flags |= THasUnion;
    appendArray(R.Slots, MR, Off, 1, MR->Size, Extra);
  }
  if (Named) {
    if (auto It = StoredById.find(R.Id); It != StoredById.end())
      appendStored(R, It->second);
  } else if (auto It = StoredByNode.find(C); It != StoredByNode.end()) {
    appendStored(R, It->second);
  }
  llvm::sort(R.Slots, [](const SlotRec &A, const SlotRec &B) {
    return std::tie(A.Offset, A.Flags, A.Target) < std::tie(B.Offset, B.Flags, B.Target);
  });
  // Template type arguments (Vec<T>, std::vector<T, A>, _Rb_tree<K, V, …>):
  // what a container holds, for the tracer's typing by holder. By id only
  // (a named argument's layout is built later from the pending list): an
  // argument may be a type whose layout is being built right now
  // (PhantomData<RcInner<T>> inside T), which by value would see it empty.
  for (const DINode *P : C->getTemplateParams())
    if (auto *TT = dyn_cast_or_null<DITemplateTypeParameter>(P))
      addField(R, 0, idOnly(TT->getType(), Depth + 1), TT->getName(), FTemplateArg);
  if (Rust && isErasedRustName(Name)) {
    R.Flags |= TErased;
    DINodeArray TP = C->getTemplateParams();
    if (TP.size())
      if (auto *TT = dyn_cast_or_null<DITemplateTypeParameter>(TP[0]))
        R.Elem = idOfDI(TT->getType(), Depth + 1);
  }
  if (Named) {
    Types[R.Id] = R;
    return R.Id;
  }
  R.Id = fnv1a(Anon);
  return add(std::move(R));
}

uint64_t TypeTable::idOfIRStructName(StringRef N) {
  for (StringRef P : {"struct.", "union.", "class."})
    if (N.consume_front(P))
      break;
  auto It = ByName.find(N);
  if (It == ByName.end())
    return 0;
  return idOf(It->second);
}

uint64_t TypeTable::idOfIR(Type *T) { return idOfIRImpl(T, 0); }

uint64_t TypeTable::idOfIRImpl(Type *T, unsigned Depth) {
  if (!T || Depth > MaxDepth || !T->isSized())
    return 0;
  auto It = IRIds.find(T);
  if (It != IRIds.end())
    return It->second;
  uint64_t Id = 0;
  if (auto *ST = dyn_cast<StructType>(T); ST && ST->hasName())
    Id = idOfIRStructName(ST->getName());
  if (!Id) {
    TypeRec R;
    R.Size = DL.getTypeAllocSize(T);
    if (T->isPointerTy()) {
      R.Kind = KPointer;
      R.Name = "void*";
      R.Id = fnv1a("ptr:void");
      SlotRec S;
      S.Flags = SUntyped;
      R.Slots.push_back(S);
    } else if (auto *ST = dyn_cast<StructType>(T)) {
      R.Kind = KStruct;
      R.Name = ST->hasName() ? ST->getName().str() : "<ir struct>";
      const StructLayout *SL = DL.getStructLayout(ST);
      std::string Anon = "anon:struct:" + std::to_string(R.Size) + ":";
      for (unsigned I = 0; I < ST->getNumElements(); ++I) {
        uint64_t EId = idOfIRImpl(ST->getElementType(I), Depth + 1);
        uint64_t Off = SL->getElementOffset(I);
        Anon += std::to_string(Off) + "=" + hex(EId) + ",";
        if (const TypeRec *E = get(EId))
          appendArray(R.Slots, E, Off, 1, E->Size, 0);
      }
      R.Id = fnv1a(Anon);
    } else if (auto *AT = dyn_cast<ArrayType>(T)) {
      uint64_t EId = idOfIRImpl(AT->getElementType(), Depth + 1);
      R.Kind = KArray;
      R.Elem = EId;
      R.Name = "<ir array>";
      R.Id = fnv1a("arr:" + hex(EId) + ":" + std::to_string(AT->getNumElements()));
      if (const TypeRec *E = get(EId))
        appendArray(R.Slots, E, 0, AT->getNumElements(),
                    DL.getTypeAllocSize(AT->getElementType()), 0);
    } else {
      std::string S;
      raw_string_ostream OS(S);
      T->print(OS);
      R.Kind = KScalar;
      R.Name = S;
      R.Id = fnv1a("base:" + S + ":" + std::to_string(R.Size));
    }
    Id = add(std::move(R));
  }
  IRIds[T] = Id;
  return Id;
}

std::set<uint64_t> TypeTable::reachable() {
  // A type this module stores pointers into is emitted even where nothing
  // else of the module names it: its STORED words are this module's to give
  // (readers take their union over every module's record of the type).
  std::vector<uint64_t> Work(Used.begin(), Used.end());
  for (const DICompositeType *C : StoredNodes)
    Work.push_back(idOf(C));
  drain();
  std::set<uint64_t> Out;
  for (const auto &[Id, R] : Types)
    if ((R.Kind == KStruct || R.Kind == KUnion || R.Kind == KEnum) && R.Size)
      Work.push_back(Id);
  // Each id enters Out once: bounded by the table's size.
  while (!Work.empty()) {
    uint64_t Id = Work.back();
    Work.pop_back();
    if (!Id || !Out.insert(Id).second)
      continue;
    const TypeRec *R = get(Id);
    if (!R)
      continue; // an id this module names but does not define (FORMAT.md §3)
    Work.push_back(R->Elem);
    for (const SlotRec &S : R->Slots)
      Work.push_back(S.Target);
    for (const FieldRec &F : R->Fields)
      Work.push_back(F.Type);
  }
  return Out;
}

} // namespace mappedtrace
