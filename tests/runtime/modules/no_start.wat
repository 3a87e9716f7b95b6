;; A library, not a program: no _start.
(module (func (export "run")))
