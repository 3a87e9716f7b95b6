;; Calls mercato.call with no memory exported (its memory is private): ends ok if
;; the call returned -5 (BAD_ARGUMENTS), else traps (it cannot print: WASI needs
;; the exported memory too).
(module
  (import "mercato" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "ok")
  (func (export "_start")
    (if (i32.ne (i32.const -5)
          (call $call (i32.const 0) (i32.const 2) (i32.const 0) (i32.const 0)
            (i32.const 0) (i32.const 0)))
      (then unreachable))))
