//! EAL: initialised once per process from arguments the config produces.

use std::ffi::CString;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{DpdkError, Result};

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// The initialised EAL. Dropping it runs `rte_eal_cleanup`, which releases
/// hugepage memory; with `--in-memory` nothing is left in the huge dir.
pub struct Eal {
    /// `--file-prefix`, naming EAL's runtime directory.
    file_prefix: Option<String>,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (the first is the program name).
    /// EAL can be initialised only once per process.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInitialised);
        }
        let owned: Vec<CString> = args
            .iter()
            .map(|a| {
                CString::new(a.as_ref())
                    .map_err(|e| DpdkError::nul(format!("EAL argument {:?}", a.as_ref()), e))
            })
            .collect::<Result<_>>()?;
        // EAL keeps pointers into argv for the life of the process: leak it on purpose.
        let argv: &'static mut [*mut c_char] =
            Vec::leak(owned.into_iter().map(|c| c.into_raw()).collect::<Vec<_>>());
        log::debug!(
            "rte_eal_init {:?}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        // SAFETY: argv holds argv.len() valid NUL-terminated strings that live forever.
        let ret = unsafe { zproxy_ffi::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if ret < 0 {
            EAL_UP.store(false, Ordering::SeqCst);
            return Err(DpdkError::last("rte_eal_init (see the EAL messages above)"));
        }
        let file_prefix = args
            .windows(2)
            .find(|w| w[0].as_ref() == "--file-prefix")
            .map(|w| w[1].as_ref().to_owned());
        Ok(Eal { file_prefix })
    }

    /// Probes a virtual device after start (hotplug), e.g. a TAP interface
    /// whose MAC is only known once the port it serves has started.
    pub fn probe_vdev(&self, devargs: &str) -> Result<()> {
        let c =
            CString::new(devargs).map_err(|e| DpdkError::nul(format!("vdev {devargs:?}"), e))?;
        // SAFETY: EAL is initialised (self exists); c is a valid C string
        // that DPDK copies what it keeps of.
        let ret = unsafe { zproxy_ffi::rte_dev_probe(c.as_ptr()) };
        super::error::check(ret, || format!("rte_dev_probe {devargs}")).map(|_| ())
    }

    /// The lcore that runs the control thread.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: plain getter, valid after init.
        unsafe { zproxy_ffi::rte_get_main_lcore() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: EAL was initialised by `init`; every Port and Mempool borrows
        // the Eal, so they are gone by now.
        let ret = unsafe { zproxy_ffi::rte_eal_cleanup() };
        if ret < 0 {
            log::warn!(
                "{}",
                crate::error::Chain(&DpdkError::from_ret("rte_eal_cleanup", ret))
            );
        }
        // Even with --in-memory, EAL makes an (empty) runtime directory and
        // leaves it behind; remove ours so that no trace stays.
        if let Some(prefix) = &self.file_prefix {
            for dir in runtime_dirs(prefix) {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Where EAL puts its runtime directory: /var/run/dpdk for root, else under
/// $XDG_RUNTIME_DIR or /tmp.
fn runtime_dirs(prefix: &str) -> Vec<std::path::PathBuf> {
    let mut bases = vec![std::path::PathBuf::from("/var/run/dpdk")];
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        bases.push(std::path::Path::new(&xdg).join("dpdk"));
    }
    bases.push("/tmp/dpdk".into());
    bases.into_iter().map(|b| b.join(prefix)).collect()
}
