//! A classic BPF interpreter: runs the programs libpcap compiles from a
//! tcpdump filter (`capture::compile`) on each frame a worker captures.
//! Programs are checked once (`Program::new`): known opcodes, forward jumps
//! that land inside, a return at the end, scratch memory in range, no
//! division by a constant zero; so `run` always ends and never panics,
//! whatever the frame. A load past the frame's end rejects it, as libpcap's
//! own `bpf_filter` does.

/// One instruction, laid out as `struct bpf_insn` (libpcap fills these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Scratch memory words (`BPF_MEMWORDS`).
const MEMWORDS: usize = 16;
/// Longest program accepted (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

// Classes, sizes, modes, operations (<pcap/bpf.h>).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;
const X: u16 = 0x08;
const RET_A: u16 = 0x10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("empty filter program")]
    Empty,
    #[error("filter program of {0} instructions: at most {MAX_INSNS}")]
    TooLong(usize),
    #[error("instruction {at}: unknown opcode {code:#06x}")]
    Opcode { at: usize, code: u16 },
    #[error("instruction {at}: jumps past the end")]
    Jump { at: usize },
    #[error("instruction {at}: scratch memory word {k} (there are {MEMWORDS})")]
    Memory { at: usize, k: u32 },
    #[error("instruction {at}: divides by a constant zero")]
    DivZero { at: usize },
    #[error("the program does not end with a return")]
    NoReturn,
}

/// A checked program.
#[derive(Debug, Clone)]
pub struct Program {
    insns: Vec<Insn>,
}

impl Program {
    pub fn new(insns: Vec<Insn>) -> Result<Program, ProgramError> {
        if insns.is_empty() {
            return Err(ProgramError::Empty);
        }
        if insns.len() > MAX_INSNS {
            return Err(ProgramError::TooLong(insns.len()));
        }
        let n = insns.len();
        for (at, i) in insns.iter().enumerate() {
            let bad = ProgramError::Opcode { at, code: i.code };
            let class = i.code & 0x07;
            match class {
                LD | LDX => {
                    let mode = i.code & 0xe0;
                    let size = i.code & 0x18;
                    let ok = match (class, mode) {
                        (LD, ABS | IND) => matches!(size, W | H | B),
                        (LD, IMM | MEM | LEN) | (LDX, IMM | MEM | LEN) => size == W,
                        (LDX, MSH) => size == B,
                        _ => false,
                    };
                    if !ok || i.code & !0xff != 0 {
                        return Err(bad);
                    }
                    if mode == MEM && i.k as usize >= MEMWORDS {
                        return Err(ProgramError::Memory { at, k: i.k });
                    }
                }
                ST | STX => {
                    if i.code != class {
                        return Err(bad);
                    }
                    if i.k as usize >= MEMWORDS {
                        return Err(ProgramError::Memory { at, k: i.k });
                    }
                }
                ALU => {
                    let op = i.code & 0xf0;
                    if op > 0xa0 || i.code & !0xff != 0 {
                        return Err(bad);
                    }
                    if matches!(op, 0x30 | 0x90) && i.code & X == 0 && i.k == 0 {
                        return Err(ProgramError::DivZero { at });
                    }
                }
                JMP => {
                    let op = i.code & 0xf0;
                    if op > 0x40 || i.code & !0xff != 0 {
                        return Err(bad);
                    }
                    let far = if op == 0 {
                        i.k as usize
                    } else {
                        usize::from(i.jt.max(i.jf))
                    };
                    if at + 1 + far >= n {
                        return Err(ProgramError::Jump { at });
                    }
                }
                RET => {
                    if !matches!(i.code & 0x18, 0x00 | X | RET_A) || i.code & !0x1f != 0 {
                        return Err(bad);
                    }
                }
                _ => {
                    if i.code != MISC && i.code != MISC | 0x80 {
                        return Err(bad);
                    }
                }
            }
        }
        if insns[n - 1].code & 0x07 != RET {
            return Err(ProgramError::NoReturn);
        }
        Ok(Program { insns })
    }

    /// Accepts everything (no filter given): `ret #262144`.
    pub fn accept_all() -> Program {
        Program {
            insns: vec![Insn {
                code: RET,
                jt: 0,
                jf: 0,
                k: 0x40000,
            }],
        }
    }

    /// Bytes of `pkt` to keep (0: reject it); `wire_len` is its length on the wire.
    pub fn run(&self, pkt: &[u8], wire_len: u32) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        let mut mem = [0u32; MEMWORDS];
        let mut pc = 0usize;
        let load = |at: u32, size: u16| -> Option<u32> {
            let at = at as usize;
            let bytes = match size {
                W => pkt.get(at..at.checked_add(4)?)?,
                H => pkt.get(at..at.checked_add(2)?)?,
                _ => pkt.get(at..at.checked_add(1)?)?,
            };
            Some(bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)))
        };
        loop {
            // In range: every jump was checked to land inside, and the last
            // instruction returns.
            let i = self.insns[pc];
            pc += 1;
            match i.code & 0x07 {
                LD => {
                    let size = i.code & 0x18;
                    a = match i.code & 0xe0 {
                        ABS => match load(i.k, size) {
                            Some(v) => v,
                            None => return 0,
                        },
                        IND => match load(x.wrapping_add(i.k), size) {
                            Some(v) => v,
                            None => return 0,
                        },
                        MEM => mem[i.k as usize],
                        LEN => wire_len,
                        _ => i.k,
                    }
                }
                LDX => {
                    x = match i.code & 0xe0 {
                        MEM => mem[i.k as usize],
                        LEN => wire_len,
                        MSH => match load(i.k, B) {
                            Some(v) => (v & 0x0f) << 2,
                            None => return 0,
                        },
                        _ => i.k,
                    }
                }
                ST => mem[i.k as usize] = a,
                STX => mem[i.k as usize] = x,
                ALU => {
                    let v = if i.code & X != 0 { x } else { i.k };
                    a = match i.code & 0xf0 {
                        0x00 => a.wrapping_add(v),
                        0x10 => a.wrapping_sub(v),
                        0x20 => a.wrapping_mul(v),
                        0x30 => match a.checked_div(v) {
                            Some(q) => q,
                            None => return 0,
                        },
                        0x40 => a | v,
                        0x50 => a & v,
                        0x60 => a.checked_shl(v).unwrap_or(0),
                        0x70 => a.checked_shr(v).unwrap_or(0),
                        0x80 => a.wrapping_neg(),
                        0x90 => match a.checked_rem(v) {
                            Some(r) => r,
                            None => return 0,
                        },
                        _ => a ^ v,
                    }
                }
                JMP => {
                    let v = if i.code & X != 0 { x } else { i.k };
                    let taken = match i.code & 0xf0 {
                        0x00 => {
                            pc += i.k as usize;
                            continue;
                        }
                        0x10 => a == v,
                        0x20 => a > v,
                        0x30 => a >= v,
                        _ => a & v != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET => {
                    return match i.code & 0x18 {
                        X => x,
                        RET_A => a,
                        _ => i.k,
                    }
                }
                _ => {
                    if i.code == MISC {
                        x = a;
                    } else {
                        a = x;
                    }
                }
            }
        }
    }
}

/// Instructions as text, `code:jt:jf:k` separated by commas (how the
/// `zproxy capture` client sends a compiled filter).
pub fn to_text(insns: &[Insn]) -> String {
    insns
        .iter()
        .map(|i| format!("{}:{}:{}:{}", i.code, i.jt, i.jf, i.k))
        .collect::<Vec<_>>()
        .join(",")
}

/// The reverse of [`to_text`]; `None` when it is not that form.
pub fn from_text(s: &str) -> Option<Vec<Insn>> {
    s.split(',')
        .map(|i| {
            let mut f = i.split(':');
            let insn = Insn {
                code: f.next()?.parse().ok()?,
                jt: f.next()?.parse().ok()?,
                jf: f.next()?.parse().ok()?,
                k: f.next()?.parse().ok()?,
            };
            f.next().is_none().then_some(insn)
        })
        .collect()
}

#[cfg(test)]
#[path = "bpf_tests.rs"]
mod tests;
