/*
 * zproxy shim: DPDK's fast-path API is made of `static inline` functions, which
 * have no symbol to link against. Each function below wraps exactly one of them
 * (or reads one per-lcore/macro value) so Rust can call it. Names keep DPDK's
 * name with a `zp_` prefix; the Rust side re-exports them under DPDK's own names.
 */
#ifndef ZPROXY_SHIM_H
#define ZPROXY_SHIM_H

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

/* rte_eth_rx_burst: receive up to nb_pkts frames from one rx queue. */
uint16_t zp_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                             struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
/* rte_eth_tx_burst: hand up to nb_pkts frames to one tx queue; returns how
 * many the driver took (the caller still owns the rest). */
uint16_t zp_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                             struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
/* rte_pktmbuf_alloc: one mbuf from the pool, reset, or NULL when empty. */
struct rte_mbuf *zp_rte_pktmbuf_alloc(struct rte_mempool *mp);
/* rte_pktmbuf_free: return an mbuf (all segments) to its pool; NULL is ok. */
void zp_rte_pktmbuf_free(struct rte_mbuf *m);
/* rte_pktmbuf_append: grow the data by len bytes; pointer to the new bytes,
 * NULL when the tailroom is too small. */
char *zp_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/* rte_pktmbuf_mtod: pointer to the first data byte of the first segment. */
void *zp_rte_pktmbuf_mtod(struct rte_mbuf *m);
/* m->data_len: bytes of data in the first segment. */
uint16_t zp_rte_pktmbuf_data_len(const struct rte_mbuf *m);
/* m->pkt_len: bytes of data in all segments. */
uint32_t zp_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
/* m->nb_segs: number of segments in the chain. */
uint16_t zp_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
/* m->ol_flags: offload flags the driver set on receive. */
uint64_t zp_rte_pktmbuf_ol_flags(const struct rte_mbuf *m);
/* rte_pktmbuf_tailroom: free bytes after the data. */
uint16_t zp_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
/* rte_errno: the calling thread's last DPDK error. */
int zp_rte_errno(void);
/* rte_lcore_id: the calling thread's lcore id (LCORE_ID_ANY off-lcore). */
unsigned zp_rte_lcore_id(void);
/* rte_rdtsc: the CPU's time stamp counter. */
uint64_t zp_rte_rdtsc(void);

#endif
