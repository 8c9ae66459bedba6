;; A waPC guest for tests/native/test_wasm.py. __guest_call dispatches on the FIRST BYTE of the
;; operation name (enough for tests, keeps the WAT short):
;;   e  echo: respond with the payload            f  fail: __guest_error(payload), return 0
;;   h  host call: payload as host-call payload; respond with the host response, or fail with
;;      the host error                             q  two host calls, then respond with
;;      host_response ++ host_error (protocol.md §6.4 QUIRK: both cleared per host call)
;;   c  __console_log(payload)                     g  memory.grow(i32 LE pages in payload);
;;      respond with the i32 LE result (-1 = refused)
;;   l  loop forever                               t  unreachable (trap)
;;   o  __guest_response with a pointer outside memory
;; Layout: binding "b" @16, namespace "ns" @32, operation "Op.Call" @48, op name @256,
;; payload @4096, scratch @32768.
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))
  (import "wapc" "__console_log" (func $console_log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "b")
  (data (i32.const 32) "ns")
  (data (i32.const 48) "Op.Call")

  (func $call_host (param $len i32) (result i32)
    (call $host_call (i32.const 16) (i32.const 1) (i32.const 32) (i32.const 2)
                     (i32.const 48) (i32.const 7) (i32.const 4096) (local.get $len)))

  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (local $op i32) (local $n i32)
    (call $guest_request (i32.const 256) (i32.const 4096))
    (local.set $op (i32.load8_u (i32.const 256)))
    (if (i32.eq (local.get $op) (i32.const 0x65)) ;; e
      (then (call $guest_response (i32.const 4096) (local.get $len)) (return (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 0x66)) ;; f
      (then (call $guest_error (i32.const 4096) (local.get $len)) (return (i32.const 0))))
    (if (i32.eq (local.get $op) (i32.const 0x68)) ;; h
      (then
        (if (i32.eq (call $call_host (local.get $len)) (i32.const 1))
          (then
            (local.set $n (call $host_response_len))
            (call $host_response (i32.const 32768))
            (call $guest_response (i32.const 32768) (local.get $n))
            (return (i32.const 1))))
        (local.set $n (call $host_error_len))
        (call $host_error (i32.const 32768))
        (call $guest_error (i32.const 32768) (local.get $n))
        (return (i32.const 0))))
    (if (i32.eq (local.get $op) (i32.const 0x71)) ;; q
      (then
        (drop (call $call_host (local.get $len)))
        (drop (call $call_host (local.get $len)))
        (local.set $n (call $host_response_len))
        (call $host_response (i32.const 32768))
        (call $host_error (i32.add (i32.const 32768) (local.get $n)))
        (call $guest_response (i32.const 32768) (i32.add (local.get $n) (call $host_error_len)))
        (return (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 0x63)) ;; c
      (then (call $console_log (i32.const 4096) (local.get $len)) (return (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 0x67)) ;; g
      (then
        (i32.store (i32.const 32768) (memory.grow (i32.load (i32.const 4096))))
        (call $guest_response (i32.const 32768) (i32.const 4))
        (return (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 0x6c)) ;; l
      (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $op) (i32.const 0x74)) ;; t
      (then unreachable))
    (if (i32.eq (local.get $op) (i32.const 0x6f)) ;; o
      (then (call $guest_response (i32.const 0xFFFFFFF0) (i32.const 100)) (return (i32.const 1))))
    (i32.const 0))
)
