;; Asks poll_oneoff to sleep 30 s on the monotonic clock, then prints what it got
;; back as three digits (the sandbox refuses: 058, ENOTSUP).
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $err i32)
    ;; subscription at 0: userdata 0, tag 0 (clock), clock id 1, timeout 30 s, precision 0, flags 0
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 30000000000))
    (local.set $err (call $poll_oneoff (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200)))
    (i32.store8 (i32.const 300) (i32.add (i32.const 48) (i32.div_u (local.get $err) (i32.const 100))))
    (i32.store8 (i32.const 301)
      (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $err) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 302) (i32.add (i32.const 48) (i32.rem_u (local.get $err) (i32.const 10))))
    (i32.store (i32.const 400) (i32.const 300))
    (i32.store (i32.const 404) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 400) (i32.const 1) (i32.const 408)))))
