;; Asks for a table of a million elements.
(module
  (table 1000000 funcref)
  (memory (export "memory") 1)
  (func (export "_start")))
