/* Small C helpers for DPDK features bindgen cannot express: per-lcore
 * thread-local variables and function-like macros. */
#include "wrapper.h"

int ubox_rte_errno(void) { return rte_errno; }
