;; Calls mercato.call("loop", "") until it fails (or 100000 times), then prints
;; how many calls succeeded and the last return code: "3 -4".
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "mercato" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "loop")
  (global $out (mut i32) (i32.const 200))

  (func $byte (param $b i32)
    (i32.store8 (global.get $out) (local.get $b))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))

  (func $int (param $n i32) (local $div i32)
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (call $byte (i32.const 45)) (local.set $n (i32.sub (i32.const 0) (local.get $n)))))
    (local.set $div (i32.const 1))
    (block $found (loop $up
      (br_if $found (i32.lt_u (i32.div_u (local.get $n) (local.get $div)) (i32.const 10)))
      (local.set $div (i32.mul (local.get $div) (i32.const 10)))
      (br $up)))
    (loop $digits
      (call $byte (i32.add (i32.const 48)
        (i32.rem_u (i32.div_u (local.get $n) (local.get $div)) (i32.const 10))))
      (local.set $div (i32.div_u (local.get $div) (i32.const 10)))
      (br_if $digits (local.get $div))))

  (func (export "_start") (local $ok i32) (local $rc i32)
    (block $failed (loop $again
      (local.set $rc (call $call (i32.const 100) (i32.const 4) (i32.const 0) (i32.const 0)
        (i32.const 0) (i32.const 0)))
      (br_if $failed (i32.lt_s (local.get $rc) (i32.const 0)))
      (local.set $ok (i32.add (local.get $ok) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $ok) (i32.const 100000)))))
    (call $int (local.get $ok))
    (call $byte (i32.const 32))
    (call $int (local.get $rc))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.sub (global.get $out) (i32.const 200)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
