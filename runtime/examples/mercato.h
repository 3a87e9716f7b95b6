/* mercato.h: the host functions an agent may import, besides WASI preview 1.
 *
 * An agent's one way out of its sandbox, narrow and metered: run another
 * agent as a paid sub-task, or ask a model for a chat completion. The node
 * running the agent decides and does the work (checks that the listing is
 * among the release's dependencies, the budget, the depth, pays); the
 * sandbox only carries the request out and the answer back.
 *
 * WebAssembly (module "mercato"; every parameter and result an i32; pointers
 * and lengths are into the module's exported memory named "memory", read as
 * unsigned 32-bit numbers):
 *
 *   call(ref_ptr, ref_len, in_ptr, in_len, out_ptr, out_cap) -> i32
 *   infer(model_ptr, model_len, req_ptr, req_len, out_ptr, out_cap) -> i32
 *   result(offset, out_ptr, out_cap) -> i32
 *
 * call runs the listing named by ref (UTF-8, 1 to 200 bytes: a dependency's
 * bare name or "publisher/name") on the input; its result is the agent's
 * output. infer sends an OpenAI-style chat completion request (JSON: messages,
 * max_tokens, ...) to the model named by model; its result is the response
 * JSON (choices[0].message.content holds the answer). Either returns:
 *
 *   >= 0  the full length of the result; its first min(length, out_cap)
 *         bytes are written at out_ptr;
 *   <  0  a MERCATO_* status below; nothing is written at out_ptr, and the
 *         host's message saying why (UTF-8) becomes the last result.
 *
 * result copies the last result (or the last failure message) from byte
 * offset into out_ptr, at most out_cap bytes, and returns how many it copied
 * (0 at or past the end; MERCATO_BAD_ARGUMENTS if the buffer is outside
 * memory). Read a result longer than your buffer, or why a call failed, with it.
 *
 * A pointer or length outside memory, an empty name or one that is not UTF-8
 * or over 200 bytes, an input over 8 MiB, or no exported memory give
 * MERCATO_BAD_ARGUMENTS and nothing leaves the sandbox; never a trap. A run
 * may make a bounded number of calls (its listing's max_subcalls): past it,
 * MERCATO_TOO_MANY. Time spent waiting counts against the run's timeout_s
 * (the run ends as a timeout if it runs out while waiting), not its fuel.
 * Under `mercato exec` there is no node: every call gives MERCATO_NO_HOST.
 */
#ifndef MERCATO_H
#define MERCATO_H

#include <stddef.h>
#include <stdint.h>

#define MERCATO_MAX_TARGET_BYTES 200
#define MERCATO_MAX_PAYLOAD_BYTES (8 * 1024 * 1024)

/* What call and infer return when they fail (always negative). */
#define MERCATO_UNDECLARED (-1)    /* the listing is not among the release's dependencies */
#define MERCATO_OVER_BUDGET (-2)   /* it could cost more than the run's budget has left */
#define MERCATO_TOO_DEEP (-3)      /* past the depth limit of the call tree */
#define MERCATO_TOO_MANY (-4)      /* the run's bound on sub-calls is reached */
#define MERCATO_BAD_ARGUMENTS (-5) /* a range outside memory, a bad name, a payload too large */
#define MERCATO_UNAVAILABLE (-6)   /* no provider could do it (none, refused, never answered) */
#define MERCATO_BAD_RECEIPT (-7)   /* the answer's receipt does not verify (nothing paid) */
#define MERCATO_FAILED (-8)        /* the sub-agent did not end ok / the model call broke off */
#define MERCATO_TIMEOUT (-9)       /* the run's wall-clock ran out while waiting */
#define MERCATO_REFUSED (-10)      /* the request itself is wrong (malformed, over the context) */
#define MERCATO_NO_HOST (-11)      /* no way out here (mercato exec, a run without a node) */

__attribute__((import_module("mercato"), import_name("call")))
int32_t mercato_call(const char *ref, size_t ref_len, const void *input, size_t input_len,
                     void *out, size_t out_cap);

__attribute__((import_module("mercato"), import_name("infer")))
int32_t mercato_infer(const char *model, size_t model_len, const void *request,
                      size_t request_len, void *out, size_t out_cap);

__attribute__((import_module("mercato"), import_name("result")))
int32_t mercato_result(size_t offset, void *out, size_t out_cap);

#endif
