; Liveness rules of the MappedTrace analysis (tests/test_pass.py reads the
; printer's output for each function).
target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-i128:128-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

declare ptr @malloc(i64)
declare void @use(ptr)
declare void @g()

; %p dominates the call to @g but is never used after it: not recorded.
define void @dead_after(ptr %p) {
  call void @use(ptr %p)
  call void @g()
  ret void
}

; %p is used after the call: recorded.
define void @live_across(ptr %p) {
  call void @g()
  call void @use(ptr %p)
  ret void
}

; Both are live at the call: %p is used on one branch, %q on the other.
; At the calls inside the branches only that branch's value is live.
define void @one_branch(ptr %p, i1 %c) {
entry:
  %q = call ptr @malloc(i64 8)
  call void @g()
  br i1 %c, label %then, label %else
then:
  call void @g()
  call void @use(ptr %p)
  ret void
else:
  call void @g()
  call void @use(ptr %q)
  ret void
}

; A phi reads %a only on the edge from %l and %b only from %r.
define void @phi_edges(ptr %a, ptr %b, i1 %c) {
entry:
  br i1 %c, label %l, label %r
l:
  call void @g()
  br label %j
r:
  call void @g()
  br label %j
j:
  %x = phi ptr [ %a, %l ], [ %b, %r ]
  call void @use(ptr %x)
  ret void
}

; A loop without calls gets a map point at its header with the live pointer.
define i64 @loop_nocall(ptr %l) {
entry:
  br label %h
h:
  %p = phi ptr [ %l, %entry ], [ %n, %h ]
  %s = phi i64 [ 0, %entry ], [ %s2, %h ]
  %v = load i64, ptr %p
  %s2 = add i64 %s, %v
  %np = getelementptr i8, ptr %p, i64 8
  %n = load ptr, ptr %np
  %done = icmp eq ptr %n, null
  br i1 %done, label %exit, label %h
exit:
  ret i64 %s2
}

; A loop with a call needs no extra point (the call is one).
define void @loop_call(ptr %l, i64 %k) {
entry:
  br label %h
h:
  %i = phi i64 [ 0, %entry ], [ %i2, %h ]
  call void @use(ptr %l)
  %i2 = add i64 %i, 1
  %done = icmp eq i64 %i2, %k
  br i1 %done, label %exit, label %h
exit:
  ret void
}

; The result of a call is not live across that call, but across the next.
define void @result_live() {
  %m = call ptr @malloc(i64 16)
  call void @g()
  call void @use(ptr %m)
  ret void
}

; Pointers into the frame (static allocas) are not values; a slot only.
define void @alloca_not_value() {
  %slot = alloca ptr, align 8
  %m = call ptr @malloc(i64 16)
  store ptr %m, ptr %slot, align 8
  call void @g()
  %r = load ptr, ptr %slot, align 8
  call void @use(ptr %r)
  ret void
}

; A vector of pointers and a pointer-holding aggregate live across a call:
; every pointer lane/field is recorded (the emitter extracts them).
define ptr @vector_lanes(ptr %a, ptr %b) {
  %v0 = insertelement <2 x ptr> poison, ptr %a, i64 0
  %v = insertelement <2 x ptr> %v0, ptr %b, i64 1
  %s0 = insertvalue { ptr, i64 } poison, ptr %a, 0
  %s = insertvalue { ptr, i64 } %s0, i64 7, 1
  call void @g()
  %x = extractelement <2 x ptr> %v, i64 1
  call void @use(ptr %x)
  %y = extractvalue { ptr, i64 } %s, 0
  ret ptr %y
}

; Pointers derived from another one by a constant are DERIVED entries (no
; register, no spill); an inbounds GEP with a variable index whose base is
; recorded is not stored (it points into the base's object).
declare void @use3(ptr, ptr, ptr, ptr)
define void @derived(ptr %p, i64 %i) {
entry:
  %f8 = getelementptr inbounds i8, ptr %p, i64 8
  %f16 = getelementptr i8, ptr %f8, i64 8
  %back = getelementptr i8, ptr %p, i64 -8
  %vi = getelementptr inbounds ptr, ptr %p, i64 %i
  call void @g()
  call void @use3(ptr %f8, ptr %f16, ptr %back, ptr %vi)
  call void @use(ptr %p)
  ret void
}

; The base is dead after the call: one derived pointer stays a VALUE; two
; or more are recorded as their base plus DERIVED entries.
define void @derived_dead_base(ptr %q, i64 %i) {
entry:
  %a = getelementptr inbounds i8, ptr %q, i64 8
  %b = getelementptr inbounds i8, ptr %q, i64 24
  %v = getelementptr inbounds ptr, ptr %q, i64 %i
  call void @g()
  call void @use3(ptr %a, ptr %b, ptr %v, ptr null)
  call void @g()
  call void @use(ptr %a)
  ret void
}

; Calls in tail position (marked `tail`, result returned, possibly through a
; shared return block) stay plain calls.
declare ptr @id(ptr)
define void @tail_void(ptr %p) {
entry:
  call void @g()
  tail call void @use(ptr %p)
  ret void
}
define ptr @tail_merge(ptr %p, i1 %c) {
entry:
  br i1 %c, label %a, label %b
a:
  %r1 = tail call ptr @id(ptr %p)
  br label %done
b:
  %r2 = call ptr @id(ptr %p)
  br label %done
done:
  %r = phi ptr [ %r1, %a ], [ %r2, %b ]
  ret ptr %r
}
define ptr @not_tail(ptr %p) {
entry:
  %r = tail call ptr @id(ptr %p)
  ret ptr %p
}

; Pointers into the binary's static image reach no heap object: a select of
; two functions and an element of a global table are not recorded; a pointer
; that may be a global or a heap pointer is, and so is a thread-local's address.
@table = global [4 x ptr] zeroinitializer
@tls = thread_local global ptr null
declare i32 @cmp_a(ptr)
declare i32 @cmp_b(ptr)
define void @static_pointers(i1 %c, i64 %i, ptr %heap) {
entry:
  %fn = select i1 %c, ptr @cmp_a, ptr @cmp_b
  %slot = getelementptr inbounds [4 x ptr], ptr @table, i64 0, i64 %i
  %mixed = select i1 %c, ptr @table, ptr %heap
  %t = call ptr @llvm.threadlocal.address.p0(ptr @tls)
  call void @g()
  %r = call i32 %fn(ptr %slot)
  call void @use(ptr %mixed)
  call void @use(ptr %t)
  ret void
}
declare ptr @llvm.threadlocal.address.p0(ptr)

; A cursor walking an array (a phi of inbounds GEPs of one base, or of
; itself) points into the base's object: where the base is recorded it is not.
; A pointer derived from it by a constant needs it stored, though.
define void @cursor(ptr %a, i64 %n) {
entry:
  br label %loop
loop:
  %c = phi ptr [ %a, %entry ], [ %next, %loop ]
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  call void @g()
  %f = getelementptr inbounds i8, ptr %c, i64 8
  call void @g()
  call void @use(ptr %f)
  %next = getelementptr inbounds i8, ptr %c, i64 16
  %i1 = add i64 %i, 1
  %d = icmp ult i64 %i1, %n
  br i1 %d, label %loop, label %exit
exit:
  call void @use(ptr %a)
  ret void
}

; Not when the base is redefined in a loop around the phi: %c still holds a
; pointer into the previous iteration's object.
define void @cursor_base_in_loop(ptr %pp, i64 %n) {
entry:
  br label %loop
loop:
  %c = phi ptr [ null, %entry ], [ %e, %loop ]
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %b = load ptr, ptr %pp
  call void @g()
  call void @use(ptr %c)
  %e = getelementptr inbounds i8, ptr %b, i64 8
  %i1 = add i64 %i, 1
  %d = icmp ult i64 %i1, %n
  br i1 %d, label %loop, label %exit
exit:
  ret void
}

; Nor in an irreducible cycle (two entries: no natural loop, a cycle all the same):
; after H2 -> H1, %p holds the previous iteration's %b (found by review).
define void @cursor_irreducible(i1 %c, i1 %d) {
entry:
  br i1 %c, label %H1, label %H2
H1:
  %p = phi ptr [ null, %entry ], [ %q, %H2 ]
  %b = call ptr @malloc(i64 8)
  call void @g()
  call void @use(ptr %p)
  call void @use(ptr %b)
  br label %H2
H2:
  %q = phi ptr [ null, %entry ], [ %b, %H1 ]
  br i1 %d, label %H1, label %exit
exit:
  ret void
}

; A GEP that is not inbounds may compute any address from a global: recorded.
define void @static_offset(ptr %h) {
entry:
  %hi = ptrtoint ptr %h to i64
  %gi = ptrtoint ptr @table to i64
  %d = sub i64 %hi, %gi
  %q = getelementptr i8, ptr @table, i64 %d
  call void @g()
  call void @use(ptr %q)
  ret void
}
