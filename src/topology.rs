//! The machine's NUMA layout, read from sysfs (a root path, so that tests
//! can point at a fabricated tree), and the check of a worker binding plan
//! against it: each worker should poll from a core on its NIC's node.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: u32,
    pub cpus: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    pub nodes: Vec<Node>,
    pub isolated: Vec<u32>,
}

impl Topology {
    /// Reads `ROOT/devices/system/node/node*/cpulist` and
    /// `ROOT/devices/system/cpu/isolated` (ROOT is normally `/sys`). A
    /// machine without NUMA nodes in sysfs is one node holding every online CPU.
    pub fn read(root: &Path) -> Topology {
        let node_dir = root.join("devices/system/node");
        let mut nodes: Vec<Node> = std::fs::read_dir(&node_dir)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let id: u32 = name.strip_prefix("node")?.parse().ok()?;
                let cpus = std::fs::read_to_string(node_dir.join(&name).join("cpulist")).ok()?;
                Some(Node {
                    id,
                    cpus: parse_cpulist(&cpus),
                })
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        if nodes.is_empty() {
            let online =
                std::fs::read_to_string(root.join("devices/system/cpu/online")).unwrap_or_default();
            nodes.push(Node {
                id: 0,
                cpus: parse_cpulist(&online),
            });
        }
        let isolated =
            std::fs::read_to_string(root.join("devices/system/cpu/isolated")).unwrap_or_default();
        Topology {
            nodes,
            isolated: parse_cpulist(&isolated),
        }
    }

    pub fn node_of_cpu(&self, cpu: u32) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.cpus.contains(&cpu))
            .map(|n| n.id)
    }
}

/// The NUMA node of a PCI device (`None` when unknown, as for virtual devices).
pub fn pci_node(root: &Path, address: &str) -> Option<u32> {
    let text =
        std::fs::read_to_string(root.join("bus/pci/devices").join(address).join("numa_node"))
            .ok()?;
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11].
pub fn parse_cpulist(s: &str) -> Vec<u32> {
    s.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if a <= b => (a..=b).collect(),
                _ => Vec::new(),
            },
            None => part.parse().into_iter().collect(),
        })
        .collect()
}

/// What is wrong or worth knowing about a binding: workers on `worker_cpus`,
/// the control thread on `main_cpu`, ports on `port_nodes` (None: unknown).
/// Errors make the plan unusable; warnings are logged loudly.
pub fn check_binding(
    topo: &Topology,
    main_cpu: u32,
    worker_cpus: &[u32],
    port_nodes: &[(String, Option<u32>)],
) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let online = || -> Vec<u32> {
        topo.nodes
            .iter()
            .flat_map(|n| n.cpus.iter().copied())
            .collect()
    };
    if !topo.nodes.is_empty() && topo.node_of_cpu(main_cpu).is_none() {
        return Err(format!(
            "control CPU {main_cpu} (main_lcore) does not exist (online CPUs: {:?})",
            online()
        ));
    }
    for &cpu in worker_cpus {
        if topo.node_of_cpu(cpu).is_none() {
            return Err(format!(
                "worker CPU {cpu} does not exist (online CPUs: {:?})",
                online()
            ));
        }
    }
    for (i, &cpu) in worker_cpus.iter().enumerate() {
        let sharing = worker_cpus.iter().filter(|&&c| c == cpu).count();
        if sharing > 1 && worker_cpus[..i].iter().all(|&c| c != cpu) {
            warnings.push(format!(
                "CPU {cpu} runs {sharing} workers: they take turns, so each polls less often"
            ));
        }
        if cpu == main_cpu {
            warnings.push(format!(
                "worker on CPU {cpu} shares it with the control thread"
            ));
        }
        let node = topo.node_of_cpu(cpu);
        for (port, port_node) in port_nodes {
            if let (Some(pn), Some(wn)) = (port_node, node) {
                if *pn != wn {
                    warnings.push(format!(
                        "worker on CPU {cpu} (node {wn}) polls port '{port}' on node {pn}: every frame crosses the interconnect; pick CPUs on node {pn}"
                    ));
                }
            }
        }
        if !topo.isolated.is_empty() && !topo.isolated.contains(&cpu) {
            warnings.push(format!("worker CPU {cpu} is not isolated (isolcpus={:?}): the kernel may schedule other work on it", topo.isolated));
        }
    }
    Ok(warnings)
}

/// The worker CPUs for `cores = "auto"`: every CPU on the node of the
/// first port whose node is known (any node when none is), except the
/// control CPU; only the isolated ones when some of them are isolated. With
/// `queues` (a port's fixed queue count) exactly that many workers, or an
/// error when the node has fewer CPUs to give.
pub fn auto_worker_cpus(
    topo: &Topology,
    main_cpu: u32,
    port_nodes: &[Option<u32>],
    queues: Option<u16>,
) -> Result<Vec<u32>, String> {
    let node = port_nodes.iter().flatten().next().copied();
    let on_node: Vec<u32> = topo
        .nodes
        .iter()
        .filter(|n| node.is_none_or(|id| n.id == id))
        .flat_map(|n| n.cpus.iter().copied())
        .filter(|&c| c != main_cpu)
        .collect();
    let isolated: Vec<u32> = on_node
        .iter()
        .copied()
        .filter(|c| topo.isolated.contains(c))
        .collect();
    let mut cpus = if isolated.is_empty() {
        on_node
    } else {
        isolated
    };
    let where_ = node.map_or("this machine".to_owned(), |n| format!("node {n}"));
    if cpus.is_empty() {
        return Err(format!(
            "cores = \"auto\": {where_} has no CPU for workers besides the control CPU {main_cpu}; list worker_lcores instead"
        ));
    }
    if let Some(q) = queues {
        let q = usize::from(q);
        if q > cpus.len() {
            return Err(format!(
                "cores = \"auto\": the ports have {q} queues, one per worker, but {where_} has only {} CPUs for workers ({cpus:?}); set queues = {} or list worker_lcores and worker_cpus",
                cpus.len(),
                cpus.len()
            ));
        }
        cpus.truncate(q);
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fabricated sysfs tree: `nodes[i]` is node i's cpulist.
    fn fake_sysfs(
        tag: &str,
        nodes: &[&str],
        isolated: &str,
        pci: &[(&str, i32)],
    ) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("zproxy-topo-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (i, cpus) in nodes.iter().enumerate() {
            let d = root.join(format!("devices/system/node/node{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cpulist"), format!("{cpus}\n")).unwrap();
        }
        std::fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
        std::fs::write(
            root.join("devices/system/cpu/isolated"),
            format!("{isolated}\n"),
        )
        .unwrap();
        for (addr, node) in pci {
            let d = root.join("bus/pci/devices").join(addr);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("numa_node"), format!("{node}\n")).unwrap();
        }
        root
    }

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist("0-3,8,10-11\n"), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpulist(""), Vec::<u32>::new());
        assert_eq!(parse_cpulist("5-2,x"), Vec::<u32>::new());
    }

    #[test]
    fn reads_1_2_4_and_8_node_machines() {
        for n in [1usize, 2, 4, 8] {
            let lists: Vec<String> = (0..n).map(|i| format!("{}-{}", i * 4, i * 4 + 3)).collect();
            let refs: Vec<&str> = lists.iter().map(String::as_str).collect();
            let root = fake_sysfs(&format!("n{n}"), &refs, "", &[]);
            let t = Topology::read(&root);
            assert_eq!(t.nodes.len(), n);
            assert_eq!(t.node_of_cpu(4 * n as u32 - 1), Some(n as u32 - 1));
            assert_eq!(t.node_of_cpu(4 * n as u32), None);
            std::fs::remove_dir_all(root).unwrap();
        }
    }

    #[test]
    fn binding_warnings_and_errors() {
        let root = fake_sysfs(
            "bind",
            &["0-3", "4-7"],
            "2-3,6-7",
            &[("0000:03:00.0", 1), ("0000:81:00.0", -1)],
        );
        let t = Topology::read(&root);
        assert_eq!(pci_node(&root, "0000:03:00.0"), Some(1));
        assert_eq!(pci_node(&root, "0000:81:00.0"), None, "-1 means unknown");
        let ports = [("nic".to_owned(), Some(1))];
        // Workers on the NIC's node, isolated, alone: nothing to say.
        assert_eq!(
            check_binding(&t, 0, &[6, 7], &ports).unwrap(),
            Vec::<String>::new()
        );
        // A remote node, a shared CPU, a non-isolated CPU, the control core.
        let w = check_binding(&t, 0, &[2, 2, 0], &ports).unwrap();
        assert!(
            w.iter().any(|m| m.contains("polls port 'nic' on node 1")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|m| m.contains("CPU 2 runs 2 workers")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|m| m.contains("shares it with the control thread")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|m| m.contains("worker CPU 0 is not isolated")),
            "{w:?}"
        );
        // A CPU that does not exist makes the plan unusable.
        assert!(check_binding(&t, 0, &[9], &ports)
            .unwrap_err()
            .contains("worker CPU 9 does not exist"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn auto_takes_the_nic_node_without_the_control_cpu() {
        for n in [1usize, 2, 4, 8] {
            let lists: Vec<String> = (0..n).map(|i| format!("{}-{}", i * 4, i * 4 + 3)).collect();
            let refs: Vec<&str> = lists.iter().map(String::as_str).collect();
            let root = fake_sysfs(&format!("auto{n}"), &refs, "", &[]);
            let t = Topology::read(&root);
            let last = n as u32 - 1;
            if n > 1 {
                // The NIC on the last node: its four CPUs.
                let cpus = auto_worker_cpus(&t, 0, &[Some(last)], None).unwrap();
                assert_eq!(cpus, (last * 4..last * 4 + 4).collect::<Vec<_>>());
                assert!(check_binding(&t, 0, &cpus, &[("nic".into(), Some(last))])
                    .unwrap()
                    .is_empty());
            }
            // The NIC on node 0 with the control thread: the other three.
            assert_eq!(
                auto_worker_cpus(&t, 0, &[Some(0)], None).unwrap(),
                [1, 2, 3]
            );
            // Virtual devices have no node: every CPU but the control one.
            let all = auto_worker_cpus(&t, 0, &[None], None).unwrap();
            assert_eq!(all.len(), 4 * n - 1);
            assert!(!all.contains(&0));
            std::fs::remove_dir_all(root).unwrap();
        }
    }

    #[test]
    fn auto_prefers_isolated_cpus_and_follows_the_first_known_port() {
        let root = fake_sysfs("autoiso", &["0-3", "4-7"], "5-6", &[]);
        let t = Topology::read(&root);
        assert_eq!(
            auto_worker_cpus(&t, 0, &[None, Some(1)], None).unwrap(),
            [5, 6]
        );
        // Ports on two nodes: the workers go to the first one's node, and the
        // binding check says what that costs the other port.
        let cpus = auto_worker_cpus(&t, 0, &[Some(1), Some(0)], None).unwrap();
        let w = check_binding(
            &t,
            0,
            &cpus,
            &[("a".into(), Some(1)), ("b".into(), Some(0))],
        )
        .unwrap();
        assert!(
            w.iter().any(|m| m.contains("polls port 'b' on node 0")),
            "{w:?}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn auto_with_more_queues_than_cores_is_refused() {
        let root = fake_sysfs("autoq", &["0-1", "2-3"], "", &[]);
        let t = Topology::read(&root);
        assert_eq!(auto_worker_cpus(&t, 0, &[Some(1)], Some(1)).unwrap(), [2]);
        let err = auto_worker_cpus(&t, 0, &[Some(1)], Some(4)).unwrap_err();
        assert!(
            err.contains("4 queues") && err.contains("only 2 CPUs"),
            "{err}"
        );
        let err = auto_worker_cpus(&t, 0, &[Some(0)], Some(2)).unwrap_err();
        assert!(err.contains("only 1 CPUs"), "{err}");
        // A one-CPU machine leaves nothing besides the control CPU.
        let one = fake_sysfs("auto1cpu", &["0"], "", &[]);
        let err = auto_worker_cpus(&Topology::read(&one), 0, &[None], None).unwrap_err();
        assert!(err.contains("no CPU for workers"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
        std::fs::remove_dir_all(one).unwrap();
    }

    #[test]
    fn more_workers_than_cpus_and_cpus_on_the_wrong_node_are_warned_about() {
        let root = fake_sysfs("over", &["0-1", "2-3"], "", &[]);
        let t = Topology::read(&root);
        let ports = [("nic".to_owned(), Some(1))];
        // Four workers on node 1's two CPUs.
        let w = check_binding(&t, 0, &[2, 3, 2, 3], &ports).unwrap();
        assert_eq!(
            w.iter().filter(|m| m.contains("runs 2 workers")).count(),
            2,
            "{w:?}"
        );
        // Workers listed on node 0 for a NIC on node 1.
        let w = check_binding(&t, 0, &[1], &ports).unwrap();
        assert!(w.iter().any(|m| m.contains("pick CPUs on node 1")), "{w:?}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
