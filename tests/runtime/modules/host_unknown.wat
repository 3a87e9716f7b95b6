;; Imports a function the mercato module does not offer.
(module
  (import "mercato" "other" (func $other (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))
