;; Calls mercato.call or mercato.infer as stdin says and prints what came back.
;; stdin: a byte naming the function (c: call, i: infer), the target, a newline,
;; then the payload. stdout: the return code and a newline; the bytes written
;; into its 16-byte buffer (min(code, 16)) and a newline; then the whole last
;; result, read back with mercato.result 7 bytes at a time.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "mercato" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "mercato" "infer" (func $infer (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "mercato" "result" (func $result (param i32 i32 i32) (result i32)))
  ;; 0: iovec; 1024: the 16-byte buffer; 2048: a chunk of result; 4096: stdout
  ;; (up to 60000 bytes); 65536: stdin (up to 196608 bytes)
  (memory (export "memory") 4)
  (global $out (mut i32) (i32.const 4096))

  (func $emit (param $ptr i32) (param $len i32)
    (memory.copy (global.get $out) (local.get $ptr) (local.get $len))
    (global.set $out (i32.add (global.get $out) (local.get $len))))

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

  (func (export "_start") (local $end i32) (local $nl i32) (local $rc i32) (local $got i32) (local $at i32)
    ;; read all of stdin
    (local.set $end (i32.const 65536))
    (loop $more
      (i32.store (i32.const 0) (local.get $end))
      (i32.store (i32.const 4) (i32.sub (i32.const 262144) (local.get $end)))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $end (i32.add (local.get $end) (i32.load (i32.const 8))))
      (br_if $more (i32.load (i32.const 8))))
    ;; the target ends at the first newline (or the end)
    (local.set $nl (i32.const 65537))
    (block $found (loop $scan
      (br_if $found (i32.ge_u (local.get $nl) (local.get $end)))
      (br_if $found (i32.eq (i32.load8_u (local.get $nl)) (i32.const 10)))
      (local.set $nl (i32.add (local.get $nl) (i32.const 1)))
      (br $scan)))
    (local.set $at (select (i32.add (local.get $nl) (i32.const 1)) (local.get $end)
      (i32.lt_u (local.get $nl) (local.get $end))))
    (if (i32.eq (i32.load8_u (i32.const 65536)) (i32.const 105))  ;; 'i'
      (then (local.set $rc (call $infer
        (i32.const 65537) (i32.sub (local.get $nl) (i32.const 65537))
        (local.get $at) (i32.sub (local.get $end) (local.get $at))
        (i32.const 1024) (i32.const 16))))
      (else (local.set $rc (call $call
        (i32.const 65537) (i32.sub (local.get $nl) (i32.const 65537))
        (local.get $at) (i32.sub (local.get $end) (local.get $at))
        (i32.const 1024) (i32.const 16)))))
    (call $int (local.get $rc))
    (call $byte (i32.const 10))
    (if (i32.gt_s (local.get $rc) (i32.const 0))
      (then (call $emit (i32.const 1024)
        (select (local.get $rc) (i32.const 16) (i32.lt_s (local.get $rc) (i32.const 16))))))
    (call $byte (i32.const 10))
    ;; the whole last result, 7 bytes at a time
    (local.set $at (i32.const 0))
    (block $done (loop $read
      (br_if $done (i32.gt_u (global.get $out) (i32.const 64000)))
      (local.set $got (call $result (local.get $at) (i32.const 2048) (i32.const 7)))
      (br_if $done (i32.le_s (local.get $got) (i32.const 0)))
      (call $emit (i32.const 2048) (local.get $got))
      (local.set $at (i32.add (local.get $at) (local.get $got)))
      (br $read)))
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.sub (global.get $out) (i32.const 4096)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
