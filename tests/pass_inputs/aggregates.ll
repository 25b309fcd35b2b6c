; First-class aggregates holding pointers, live across a call (read by
; tests/test_map_oracle.py through the oracle). Each pointer lane must be a
; VALUE pair (the emitter extracts it at the call). Documented gaps, which the
; oracle reports: pointers nested one aggregate deeper and aggregates of more
; than 16 elements.
target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

%struct.pair = type { ptr, i64 }

declare void @g()
declare void @use(ptr)

; a named struct value (was not recorded before the oracle found it)
define void @named(ptr %src) {
  %v = load %struct.pair, ptr %src
  call void @g()
  %p = extractvalue %struct.pair %v, 0
  call void @use(ptr %p)
  ret void
}

; an array value (likewise)
define void @array(ptr %src) {
  %v = load [2 x ptr], ptr %src
  call void @g()
  %p = extractvalue [2 x ptr] %v, 1
  call void @use(ptr %p)
  ret void
}

define void @literal(ptr %src) {
  %v = load { ptr, i64 }, ptr %src
  call void @g()
  %p = extractvalue { ptr, i64 } %v, 0
  call void @use(ptr %p)
  ret void
}

define void @vector(ptr %src) {
  %v = load <2 x ptr>, ptr %src
  call void @g()
  %p = extractelement <2 x ptr> %v, i64 1
  call void @use(ptr %p)
  ret void
}

; gap: the inner pointer of a nested aggregate
define void @nested(ptr %src) {
  %v = load { ptr, { ptr, i64 } }, ptr %src
  call void @g()
  %p = extractvalue { ptr, { ptr, i64 } } %v, 1, 0
  call void @use(ptr %p)
  ret void
}

; gap: more than 16 lanes
define void @wide(ptr %src) {
  %v = load <32 x ptr>, ptr %src
  call void @g()
  %p = extractelement <32 x ptr> %v, i64 3
  call void @use(ptr %p)
  ret void
}
