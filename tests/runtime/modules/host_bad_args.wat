;; Calls mercato.call, mercato.infer and mercato.result with malformed arguments
;; and prints each return code (all -5, BAD_ARGUMENTS) followed by a space, a
;; newline, then the last message, read back with mercato.result.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "mercato" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "mercato" "infer" (func $infer (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "mercato" "result" (func $result (param i32 i32 i32) (result i32)))
  (memory (export "memory") 129)  ;; 8454144 bytes: room for a payload over 8 MiB
  (data (i32.const 100) "ok")
  (data (i32.const 110) "\ff\fe")
  (global $out (mut i32) (i32.const 200))

  (func $byte (param $b i32)
    (i32.store8 (global.get $out) (local.get $b))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))

  (func $code (param $n i32)  ;; -1 to -99, then a space
    (call $byte (i32.const 45))
    (local.set $n (i32.sub (i32.const 0) (local.get $n)))
    (if (i32.ge_u (local.get $n) (i32.const 10))
      (then (call $byte (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 10))))))
    (call $byte (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
    (call $byte (i32.const 32)))

  (func (export "_start") (local $got i32)
    ;; the target past the end of memory
    (call $code (call $call (i32.const 8454140) (i32.const 10) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0)))
    ;; a negative length
    (call $code (call $call (i32.const 100) (i32.const -1) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0)))
    ;; an input at a "negative" pointer: unsigned, far past the end (no wrap-around)
    (call $code (call $call (i32.const 100) (i32.const 2) (i32.const -16) (i32.const 32)
      (i32.const 0) (i32.const 0)))
    ;; an output buffer that runs past the end
    (call $code (call $call (i32.const 100) (i32.const 2) (i32.const 0) (i32.const 0)
      (i32.const 8454100) (i32.const 100)))
    ;; an empty target
    (call $code (call $call (i32.const 100) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0)))
    ;; a target that is not UTF-8
    (call $code (call $call (i32.const 110) (i32.const 2) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0)))
    ;; a target of 201 bytes
    (call $code (call $call (i32.const 1000) (i32.const 201) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0)))
    ;; a payload of 8 MiB + 1
    (call $code (call $call (i32.const 100) (i32.const 2) (i32.const 0) (i32.const 8388609)
      (i32.const 0) (i32.const 0)))
    ;; infer with the model name past the end
    (call $code (call $infer (i32.const -1) (i32.const 2) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0)))
    ;; result into a buffer past the end: the last message stays
    (call $code (call $result (i32.const 0) (i32.const -1) (i32.const 10)))
    (call $byte (i32.const 10))
    (local.set $got (call $result (i32.const 0) (global.get $out) (i32.const 300)))
    (global.set $out (i32.add (global.get $out) (local.get $got)))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.sub (global.get $out) (i32.const 200)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
