//===- StackTable.cpp - the compact stack map section `.mtstack` ----------===//
//
// LLVM's StackMap v3 spends 16 bytes on a record header, 12 on each location
// and pads to 8: about 157 bytes per call site in gawk, more than the code
// itself. This file writes the same records to `.mtstack` (FORMAT.md §1a):
// per object one block with a dictionary of distinct locations and one of
// distinct location lists ("shapes": most call sites of a function share one;
// each written as runs copied from the previous shape and literal runs),
// then per function its records as (ID delta, return-address delta, shape).
// Integers are LEB128; the return-address deltas are label differences that
// the assembler resolves (`.uleb128 .Ltmp5-.Ltmp3`, as in DWARF and LSDA
// call-site tables), so the encoding is exact without knowing code addresses.
//
// The printer of the GC strategy "mappedtrace" (Addresses.cpp) calls
// emitStackTable before LLVM would serialize `.llvm_stackmaps`; LLVM's table
// is then written only when MAPPEDTRACE_LLVM_STACKMAPS=1 asks for it (tests
// compare the two decodings record by record).
//
// Nothing here changes code: the section is data only.
//===----------------------------------------------------------------------===//
#include "MappedTrace.h"
#include "llvm/BinaryFormat/ELF.h"
#include "llvm/CodeGen/AsmPrinter.h"
#include "llvm/CodeGen/StackMaps.h"
#include "llvm/MC/MCContext.h"
#include "llvm/MC/MCExpr.h"
#include "llvm/MC/MCSectionELF.h"
#include "llvm/MC/MCStreamer.h"
#include <cstdlib>
#include <map>
#include <tuple>

using namespace llvm;

namespace mappedtrace {

// StackMaps keeps its constant pool private; ConstantIndex locations index
// it. An explicit instantiation may name a private member (C++ [temp.spec]),
// which gives read access without changing LLVM.
using PoolMember = StackMaps::ConstantPool StackMaps::*;
struct PoolTag {
  friend PoolMember poolOf(PoolTag);
};
template <PoolMember P> struct PoolAccess {
  friend PoolMember poolOf(PoolTag) { return P; }
};
template struct PoolAccess<&StackMaps::ConstPool>;

bool keepLLVMStackMaps() {
  const char *E = std::getenv("MAPPEDTRACE_LLVM_STACKMAPS");
  return E && E[0] == '1';
}

namespace {

using LocKey = std::tuple<unsigned, unsigned, unsigned, int32_t>; // kind, size, reg, offset
using ShapeKey = std::pair<std::vector<unsigned>, std::vector<std::pair<unsigned, unsigned>>>;

// Greedy: at each position the longest run of \p Prev that matches what
// follows (two indices or more) is copied, `ULEB (length << 1 | 1), ULEB
// start`; what no run covers goes into literal runs, `ULEB (length << 1)`
// then the indices (FORMAT.md §1a, version 2).
void encodeShape(const std::vector<unsigned> &Cur, const std::vector<unsigned> &Prev,
                 std::vector<uint64_t> &Out, unsigned &NTokens) {
  std::vector<unsigned> Lit;
  auto Flush = [&] {
    if (Lit.empty())
      return;
    Out.push_back((uint64_t)Lit.size() << 1);
    Out.insert(Out.end(), Lit.begin(), Lit.end());
    ++NTokens;
    Lit.clear();
  };
  // Very long lists are written literally (the search is quadratic).
  bool Search = (uint64_t)Cur.size() * Prev.size() <= (1u << 20);
  for (size_t I = 0; I < Cur.size();) {
    size_t BestLen = 0, BestAt = 0;
    for (size_t A = 0; Search && A < Prev.size(); ++A) {
      size_t L = 0;
      while (I + L < Cur.size() && A + L < Prev.size() && Cur[I + L] == Prev[A + L])
        ++L;
      if (L > BestLen) {
        BestLen = L;
        BestAt = A;
      }
    }
    if (BestLen >= 2) {
      Flush();
      Out.push_back((uint64_t)BestLen << 1 | 1);
      Out.push_back(BestAt);
      ++NTokens;
      I += BestLen;
    } else {
      Lit.push_back(Cur[I++]);
    }
  }
  Flush();
}

} // namespace

void emitStackTable(StackMaps &SM, AsmPrinter &AP, ArrayRef<StackTableFn> Fns) {
  StackMaps::CallsiteInfoList &Records = SM.getCSInfos();
  if (Records.empty())
    return;
  MCContext &Ctx = AP.OutContext;
  MCStreamer &OS = *AP.OutStreamer;
  const StackMaps::ConstantPool &Pool = SM.*poolOf(PoolTag{});

  // Dictionaries, in order of first use.
  std::map<LocKey, unsigned> LocIdx;
  std::vector<LocKey> Locs;
  std::map<ShapeKey, unsigned> ShapeIdx;
  std::vector<const ShapeKey *> Shapes;
  std::vector<unsigned> RecShape(Records.size());
  for (size_t I = 0; I < Records.size(); ++I) {
    const StackMaps::CallsiteInfo &CSI = Records[I];
    ShapeKey K;
    for (const StackMaps::Location &L : CSI.Locations) {
      LocKey LK{(unsigned)L.Type, L.Size, L.Reg, L.Offset};
      auto [It, New] = LocIdx.try_emplace(LK, Locs.size());
      if (New)
        Locs.push_back(LK);
      K.first.push_back(It->second);
    }
    for (const StackMaps::LiveOutReg &LO : CSI.LiveOuts)
      K.second.push_back({LO.DwarfRegNum, LO.Size});
    auto [It, New] = ShapeIdx.try_emplace(std::move(K), Shapes.size());
    if (New)
      Shapes.push_back(&It->first);
    RecShape[I] = It->second;
  }

  OS.pushSection();
  OS.switchSection(Ctx.getELFSection(StackTableSection, ELF::SHT_PROGBITS, ELF::SHF_ALLOC));
  MCSymbol *Start = Ctx.createTempSymbol("mt_stack");
  MCSymbol *End = Ctx.createTempSymbol("mt_stack_end");
  OS.emitLabel(Start);
  // Header (16 bytes): magic, version, header size, block size, reserved.
  OS.emitBytes(StringRef(StackTableMagic, 4));
  OS.emitInt16(StackTableVersion);
  OS.emitInt16(16);
  OS.emitValue(MCBinaryExpr::createSub(MCSymbolRefExpr::create(End, Ctx),
                                       MCSymbolRefExpr::create(Start, Ctx), Ctx),
               4);
  OS.emitInt32(0);
  OS.emitULEB128IntValue(Fns.size());
  OS.emitULEB128IntValue(Pool.size());
  OS.emitULEB128IntValue(Locs.size());
  OS.emitULEB128IntValue(Shapes.size());
  OS.emitULEB128IntValue(Records.size());
  for (const auto &KV : Pool)
    OS.emitInt64(KV.second);
  for (const LocKey &L : Locs) {
    OS.emitInt8(std::get<0>(L));
    OS.emitULEB128IntValue(std::get<1>(L));
    OS.emitULEB128IntValue(std::get<2>(L));
    OS.emitSLEB128IntValue(std::get<3>(L));
  }
  // Version 2: a shape's location list is written against the previous
  // shape's (consecutive call sites of a function keep most values where they
  // were): runs copied from it, and literal runs of location indices.
  const std::vector<unsigned> None;
  const std::vector<unsigned> *Prev = &None;
  for (const ShapeKey *S : Shapes) {
    std::vector<uint64_t> Tokens;
    unsigned NTokens = 0;
    encodeShape(S->first, *Prev, Tokens, NTokens);
    Prev = &S->first;
    OS.emitULEB128IntValue(S->first.size());
    OS.emitULEB128IntValue(NTokens);
    for (uint64_t T : Tokens)
      OS.emitULEB128IntValue(T);
    OS.emitULEB128IntValue(S->second.size());
    for (auto [Reg, Size] : S->second) {
      OS.emitULEB128IntValue(Reg);
      OS.emitULEB128IntValue(Size);
    }
  }
  uint64_t PrevId = 0;
  size_t First = 0; // records are listed function by function, in entry order
  for (const StackTableFn &F : Fns) {
    size_t N = std::min((size_t)F.RecordCount, Records.size() - First);
    if (F.Local) {
      // RELATIVE: i32 (function address - address of this field), a
      // PC-relative fixup against a local name that the static linker resolves.
      OS.emitInt8(1);
      MCSymbol *Here = Ctx.createTempSymbol("mt_stack_fn");
      OS.emitLabel(Here);
      OS.emitValue(MCBinaryExpr::createSub(MCSymbolRefExpr::create(F.Local, Ctx),
                                           MCSymbolRefExpr::create(Here, Ctx), Ctx),
                   4);
    } else {
      OS.emitInt8(0);
      OS.emitValue(MCSymbolRefExpr::create(F.Sym, Ctx), 8);
    }
    OS.emitULEB128IntValue(F.StackSize);
    OS.emitULEB128IntValue(N);
    // CSOffsetExpr is `label - function`; the delta from the previous record
    // is `label - previous label` (records come in code order, so it is never
    // negative). Should an offset not have that form, deltas of the whole
    // offset expressions say the same.
    bool Labels = true;
    for (size_t I = First; I < First + N; ++I) {
      const auto *B = dyn_cast<MCBinaryExpr>(Records[I].CSOffsetExpr);
      Labels &= B && B->getOpcode() == MCBinaryExpr::Sub && isa<MCSymbolRefExpr>(B->getLHS());
    }
    const MCExpr *Prev = nullptr;
    for (size_t I = First; I < First + N; ++I) {
      const StackMaps::CallsiteInfo &CSI = Records[I];
      OS.emitSLEB128IntValue((int64_t)(CSI.ID - PrevId));
      PrevId = CSI.ID;
      const MCExpr *Cur = Labels ? cast<MCBinaryExpr>(CSI.CSOffsetExpr)->getLHS() : CSI.CSOffsetExpr;
      OS.emitULEB128Value(Prev ? MCBinaryExpr::createSub(Cur, Prev, Ctx) : CSI.CSOffsetExpr);
      Prev = Cur;
      OS.emitULEB128IntValue(RecShape[I]);
    }
    First += N;
  }
  OS.emitLabel(End);
  OS.popSection();
}

} // namespace mappedtrace
