; A patchpoint and stackmaps with negative and 64-bit constants, a frame
; pointer (rbp-relative Direct locations) and a dynamic alloca (stack size
; unknown).  MappedTrace does not emit patchpoints, but the decoder must read
; any v3 table.  LLVM 22's llc crashes computing patchpoint live-outs
; (StackMaps::parseRegisterLiveOutMask), so tests build this with
; -enable-patchpoint-liveness=false; live-outs are covered by generated tables.
target triple = "x86_64-unknown-linux-gnu"

declare void @llvm.experimental.patchpoint.void(i64, i32, ptr, i32, ...)
declare void @llvm.experimental.stackmap(i64, i32, ...)
declare void @use(ptr, ptr, i64)

define void @pp(ptr %a, ptr %b, i64 %n) "frame-pointer"="all" {
entry:
  %buf = alloca [16 x i64], align 16
  %dyn = alloca i64, i64 %n, align 16
  call void @use(ptr %buf, ptr %dyn, i64 %n)
  call void (i64, i32, ptr, i32, ...) @llvm.experimental.patchpoint.void(i64 77, i32 16, ptr null, i32 0, ptr %a, i64 -5)
  %x = add i64 %n, 1
  call void (i64, i32, ...) @llvm.experimental.stackmap(i64 78, i32 0, ptr %buf, i64 -1, i64 4294967296, ptr %b, i64 -9223372036854775808)
  call void @use(ptr %a, ptr %b, i64 %x)
  ret void
}
