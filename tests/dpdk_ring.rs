//! The safe DPDK layer on real DPDK, without hugepages or NICs: `--no-huge`
//! memory and `net_ring` loopback ports (what is sent on a ring port's tx
//! queue arrives on its rx queue).
//!
//! EAL can be initialised once per process, so this file holds one test that
//! runs its checks in order (nextest and `cargo test` both run it alone).

use zproxy::dpdk::{Eal, Mbuf, MbufBurst, Mempool, Port, PortConfig, QueueId};

mod common;

fn eal() -> Eal {
    let args = [
        "zproxy-test",
        "-l",
        "0",
        "--no-huge",
        "--no-shconf",
        "--no-telemetry",
        "-m",
        "256",
        "--no-pci",
        "--file-prefix",
        &format!("zptest-ring-{}", std::process::id()),
        "--vdev",
        "net_ring0",
        "--log-level",
        "lib.eal:error",
    ];
    Eal::init(&args).expect("EAL init with --no-huge and a net_ring vdev")
}

fn frame(i: u8) -> Vec<u8> {
    (0..64u8)
        .map(|b| b.wrapping_mul(7).wrapping_add(i))
        .collect()
}

#[test]
fn dpdk_layer_on_net_ring() {
    if !common::require_root() {
        return;
    }
    let eal = eal();
    assert!(
        Eal::init(&["again"]).is_err(),
        "a second EAL init must be refused"
    );

    let pool = Mempool::new(&eal, "test_pool", 1023, 0, 2176, -1).expect("pool");
    assert_eq!(pool.in_use(), 0);

    // Alloc/free balance, including bursts and their Drop.
    {
        let mut held: Vec<Mbuf> = (0..100).map(|_| pool.alloc().expect("mbuf")).collect();
        assert_eq!(pool.in_use(), 100);
        let mut burst = MbufBurst::<32>::default();
        for m in held.drain(..32) {
            assert!(burst.push(m).is_ok());
        }
        assert!(burst.is_full());
        let extra = held.pop().unwrap();
        assert!(
            burst.push(extra).is_err(),
            "a full burst hands the mbuf back (and it is freed)"
        );
        assert_eq!(pool.in_use(), 99);
    }
    assert_eq!(
        pool.in_use(),
        0,
        "dropping mbufs and bursts returns every mbuf"
    );

    // Exhaustion is an empty result, not a crash, and recovers.
    {
        let all: Vec<Mbuf> = std::iter::from_fn(|| pool.alloc()).collect();
        assert!(all.len() >= 1000, "got {}", all.len());
        assert!(pool.alloc().is_none());
    }
    assert_eq!(pool.in_use(), 0);

    // An unknown device is a clear error.
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 256,
        tx_descriptors: 256,
        mtu: None,
        rss_key: zproxy::net::rss::RSS_KEY,
    };
    let err = Port::start(&eal, "net_nosuch0", &cfg, &[&pool])
        .err()
        .expect("unknown device must fail");
    assert!(err.to_string().contains("no such DPDK port"), "{err}");
    let err = Port::start(
        &eal,
        "net_ring0",
        &PortConfig {
            rx_queues: 64,
            ..cfg.clone()
        },
        &[&pool],
    )
    .err()
    .expect("too many queues must fail");
    assert!(err.to_string().contains("at most"), "{err}");
    let err = Port::start(&eal, "net_ring0", &cfg, &[&pool, &pool])
        .err()
        .expect("a pool per rx queue");
    assert!(err.to_string().contains("need one pool each"), "{err}");

    // Frames sent on the ring port arrive back, byte for byte.
    {
        let port = Port::start(&eal, "net_ring0", &cfg, &[&pool]).expect("start net_ring0");
        assert!(port.link().expect("link").up);
        let q = port.queue(QueueId(0));
        let mut tx = MbufBurst::<32>::default();
        for i in 0..32u8 {
            let mut m = pool.alloc().unwrap();
            m.append(64).unwrap().copy_from_slice(&frame(i));
            assert!(tx.push(m).is_ok());
        }
        assert_eq!(q.tx_burst(&mut tx), 32);
        assert!(tx.is_empty());
        let mut rx = MbufBurst::<32>::default();
        let mut got = 0;
        for _ in 0..100 {
            got += q.rx_burst(&mut rx);
            if got == 32 {
                break;
            }
        }
        assert_eq!(got, 32);
        for (i, m) in rx.drain().enumerate() {
            assert_eq!(
                m.data(),
                &frame(i as u8)[..],
                "frame {i} changed on the way"
            );
        }
        let stats = port.stats().unwrap();
        assert_eq!((stats.tx_packets, stats.rx_packets), (32, 32));
    }
    assert_eq!(pool.in_use(), 0, "no mbuf leaked through the port");

    drop(pool);
    drop(eal);
    let runtime_dir = format!("/var/run/dpdk/zptest-ring-{}", std::process::id());
    assert!(
        !std::path::Path::new(&runtime_dir).exists(),
        "{runtime_dir} left behind"
    );
}
