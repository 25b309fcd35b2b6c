; Hand-written IR in MappedTrace's conventions: statepoints whose deopt
; operands are (descriptor, value) pairs, and a zero-byte loop stackmap.
; Build: llc-22 -O2 -filetype=obj statepoint_basic.ll ; check: llvm-readobj-22 --stackmap
target triple = "x86_64-unknown-linux-gnu"

declare void @consume(ptr)
declare ptr @make(i64)
declare void @llvm.experimental.stackmap(i64, i32, ...)
declare token @llvm.experimental.gc.statepoint.p0(i64, i32, ptr, i32, i32, ...)

define ptr @two_calls(ptr %a, ptr %b) gc "statepoint-example" {
entry:
  %slot = alloca [4 x ptr], align 8
  store ptr %a, ptr %slot
  ; call site 1: a and b live across; a VALUE with a big type id (ConstantIndex), b untyped (Constant 0)
  %t1 = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 5572079738475773953, i32 0, ptr elementtype(void (ptr)) @consume, i32 1, i32 0, ptr %a, i32 0, i32 0) [ "deopt"(i64 1311768467463790320, ptr %a, i64 0, ptr %b, i64 4611686018427387905, ptr %slot) ]
  %t2 = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 5572079738475773954, i32 0, ptr elementtype(void (ptr)) @consume, i32 1, i32 0, ptr %b, i32 0, i32 0) [ "deopt"(i64 7, ptr %b) ]
  %r = load ptr, ptr %slot
  ret ptr %r
}

define i64 @loop(ptr %p, i64 %n) {
entry:
  br label %head
head:
  %i = phi i64 [ 0, %entry ], [ %i1, %head ]
  %acc = phi i64 [ 0, %entry ], [ %acc1, %head ]
  call void (i64, i32, ...) @llvm.experimental.stackmap(i64 5572080837987401731, i32 0, i64 99, ptr %p)
  %q = getelementptr i64, ptr %p, i64 %i
  %v = load i64, ptr %q
  %acc1 = add i64 %acc, %v
  %i1 = add i64 %i, 1
  %c = icmp ult i64 %i1, %n
  br i1 %c, label %head, label %exit
exit:
  ret i64 %acc1
}

define void @plain_ids(ptr %p) {
  ; a stackmap with a non-MappedTrace ID: decoders ignore it
  call void (i64, i32, ...) @llvm.experimental.stackmap(i64 42, i32 0, ptr %p)
  ret void
}
