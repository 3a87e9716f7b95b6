;; A data segment past the end of its memory: instantiation fails (not a memory limit).
(module
  (memory (export "memory") 1)
  (data (i32.const 70000) "x")
  (func (export "_start")))
