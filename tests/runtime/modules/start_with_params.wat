;; A _start that wants an argument: not a WASI command.
(module (func (export "_start") (param i32)))
