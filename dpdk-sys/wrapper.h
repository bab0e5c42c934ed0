/* The DPDK headers ubox binds. Keep this list short: each header adds
 * bindgen time and surface. */
#include <rte_config.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_memory.h>
#include <rte_malloc.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_ring.h>
#include <rte_ethdev.h>
#include <rte_dev.h>
#include <rte_log.h>

/* Helpers for what bindgen cannot reach (thread-local errno, macros). */
int ubox_rte_errno(void);
