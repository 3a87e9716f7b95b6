;; Tries to open a file through every descriptor a preopen could have (3..9) and
;; to read its environment and arguments, then prints what it got:
;; "open:<errno of the last try> env:<count> args:<count>" (three digits each).
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "etc/passwd")
  (data (i32.const 200) "open:000 env:000 args:000\n")
  (func $digits (param $at i32) (param $n i32)
    ;; writes n (0..999) as three decimal digits at $at
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 100))))
    (i32.store8 (i32.add (local.get $at) (i32.const 1))
      (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $n) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.add (local.get $at) (i32.const 2))
      (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10)))))
  (func (export "_start")
    (local $fd i32) (local $err i32)
    (local.set $fd (i32.const 3))
    (loop $next
      (local.set $err
        (call $path_open (local.get $fd) (i32.const 0) (i32.const 100) (i32.const 10)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 300)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $fd) (i32.const 10))))
    (call $digits (i32.const 205) (local.get $err))
    (drop (call $environ_sizes_get (i32.const 400) (i32.const 404)))
    (call $digits (i32.const 213) (i32.load (i32.const 400)))
    (drop (call $args_sizes_get (i32.const 408) (i32.const 412)))
    (call $digits (i32.const 222) (i32.load (i32.const 408)))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.const 26))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
