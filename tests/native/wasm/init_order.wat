;; Records the order of the init exports (protocol.md §6.2) as bytes at 1024.., and responds with
;; them. Imports WASI because a TinyGo `_start` ends with proc_exit(0), which must not fail.
(module
  (import "wasmbus" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (func $mark (param $c i32)
    (i32.store8 (i32.add (i32.const 1024) (global.get $n)) (local.get $c))
    (global.set $n (i32.add (global.get $n) (i32.const 1))))
  (func (export "__wasmbus_rpc_version") (result i32) (call $mark (i32.const 0x56)) (i32.const 7)) ;; V
  (func (export "start") (call $mark (i32.const 0x53)))       ;; S
  (func (export "wapc_init") (call $mark (i32.const 0x57)))   ;; W
  (func (export "_start") (call $mark (i32.const 0x5f)) (call $proc_exit (i32.const 0)))  ;; _
  (func (export "__guest_call") (param i32 i32) (result i32)
    (call $guest_response (i32.const 1024) (global.get $n))
    (i32.const 1))
)
