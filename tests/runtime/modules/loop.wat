;; Runs forever: stopped by fuel or by the clock.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))
