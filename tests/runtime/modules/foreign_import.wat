;; Imports a host function the sandbox does not offer.
(module
  (import "env" "open_socket" (func (result i32)))
  (func (export "_start")))
