;; Imports mercato.call with a signature it does not have.
(module
  (import "mercato" "call" (func $call (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))
