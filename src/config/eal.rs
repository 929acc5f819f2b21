//! The EAL command line a config asks for.

use super::Config;

impl Config {
    /// EAL arguments for this config; `file_prefix` keeps instances apart.
    pub fn eal_args(&self, file_prefix: &str) -> Vec<String> {
        let rt = &self.runtime;
        // lcore@cpu for every lcore: lcore ids need not be CPU numbers.
        let cpus = rt
            .worker_cpus
            .clone()
            .unwrap_or_else(|| rt.worker_lcores.clone());
        let mut lcores = vec![format!("{}@{}", rt.main_lcore, rt.main_lcore)];
        lcores.extend(
            rt.worker_lcores
                .iter()
                .zip(&cpus)
                .map(|(l, c)| format!("{l}@{c}")),
        );
        let mut args = vec![
            "zproxy".to_owned(),
            "--lcores".into(),
            lcores.join(","),
            "--main-lcore".into(),
            rt.main_lcore.to_string(),
            "--file-prefix".into(),
            file_prefix.into(),
            // Its socket would outlive us in the runtime dir; stats are served by zproxy.
            "--no-telemetry".into(),
        ];
        if rt.no_huge {
            // Anonymous memory: no files to leave behind (and --in-memory would clash).
            args.extend([
                "--no-huge".into(),
                "--no-shconf".into(),
                "-m".into(),
                rt.memory_mb.to_string(),
            ]);
        } else {
            // No shared files: nothing is left in the huge dir or /var/run/dpdk.
            args.push("--in-memory".into());
            if let Some(dir) = &rt.hugepage_dir {
                args.extend(["--huge-dir".into(), dir.display().to_string()]);
            }
        }
        if self.ports.iter().all(|p| p.pci.is_none()) {
            args.push("--no-pci".into());
        }
        for p in &self.ports {
            match (&p.vdev, &p.pci) {
                (Some(v), _) => args.extend(["--vdev".into(), v.clone()]),
                (_, Some(pci)) => args.extend(["-a".into(), pci.clone()]),
                _ => {}
            }
        }
        // A zero-copy memif client shares its hugepage files with the peer,
        // one file per segment list (DPDK's memif needs this mode for it).
        let zero_copy = self
            .ports
            .iter()
            .filter_map(|p| p.vdev.as_deref())
            .any(|v| v.starts_with("net_memif") && v.split(',').any(|a| a == "zero-copy=yes"));
        let single = "--single-file-segments";
        if zero_copy && !rt.no_huge && !rt.eal_args.iter().any(|a| a == single) {
            args.push(single.into());
        }
        args.extend(rt.eal_args.iter().cloned());
        args
    }
}
