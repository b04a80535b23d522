//! A seccomp filter (classic BPF, for bubblewrap's `--seccomp FD`) that refuses new
//! user namespaces inside the sandbox: `unshare` and `clone` with `CLONE_NEWUSER` fail
//! with `EPERM`, and `clone3` — whose flags a filter cannot read — fails with `ENOSYS`,
//! so the C library falls back to `clone`. Syscalls of another ABI (i386, x32), which
//! could bypass the numbers checked here, fail with `EPERM`.
//!
//! A nested user namespace would not undo the mounts (they are locked), but it is
//! the way into most kernel attack surface an unprivileged process can reach.

/// Bytes of the filter for this machine, or `None` where no filter is defined.
pub fn filter() -> Option<Vec<u8>> {
    let arch = Arch::current()?;
    let program = program(arch);
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    Some(bytes)
}

#[derive(Clone, Copy, Debug)]
struct Arch {
    audit: u32,
    unshare: u32,
    clone: u32,
    clone3: u32,
    /// x86-64 marks x32 calls with this bit in the number.
    x32_bit: Option<u32>,
}

impl Arch {
    fn current() -> Option<Self> {
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            Some(Self {
                audit: 0xc000_003e,
                unshare: 272,
                clone: 56,
                clone3: 435,
                x32_bit: Some(0x4000_0000),
            })
        } else if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
            Some(Self {
                audit: 0xc000_00b7,
                unshare: 97,
                clone: 220,
                clone3: 435,
                x32_bit: None,
            })
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Instruction {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const LOAD_WORD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JUMP_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JUMP_GREATER_EQUAL: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JUMP_SET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RETURN: u16 = 0x06; // BPF_RET | BPF_K

const ALLOW: u32 = 0x7fff_0000;
const ERRNO: u32 = 0x0005_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const CLONE_NEWUSER: u32 = 0x1000_0000;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

#[derive(Clone, Copy)]
enum Label {
    Flags,
    Deny,
    NoSys,
}

enum Op {
    Plain(Instruction),
    /// Jump to the label when the test holds, fall through otherwise.
    JumpIf(u16, u32, Label),
    /// Jump to the label when the test fails.
    JumpUnless(u16, u32, Label),
    Mark(Label),
}

fn program(arch: Arch) -> Vec<Instruction> {
    let load = |k| {
        Op::Plain(Instruction {
            code: LOAD_WORD,
            jt: 0,
            jf: 0,
            k,
        })
    };
    let ret = |k| {
        Op::Plain(Instruction {
            code: RETURN,
            jt: 0,
            jf: 0,
            k,
        })
    };
    let mut ops = vec![
        load(ARCH),
        Op::JumpUnless(JUMP_EQUAL, arch.audit, Label::Deny),
        load(NR),
    ];
    if let Some(bit) = arch.x32_bit {
        ops.push(Op::JumpIf(JUMP_GREATER_EQUAL, bit, Label::Deny));
    }
    ops.extend([
        Op::JumpIf(JUMP_EQUAL, arch.clone3, Label::NoSys),
        Op::JumpIf(JUMP_EQUAL, arch.unshare, Label::Flags),
        Op::JumpIf(JUMP_EQUAL, arch.clone, Label::Flags),
        ret(ALLOW),
        Op::Mark(Label::Flags),
        load(ARG0_LOW),
        Op::JumpIf(JUMP_SET, CLONE_NEWUSER, Label::Deny),
        ret(ALLOW),
        Op::Mark(Label::Deny),
        ret(ERRNO | EPERM),
        Op::Mark(Label::NoSys),
        ret(ERRNO | ENOSYS),
    ]);
    assemble(&ops)
}

/// Resolves labels into relative jump offsets.
fn assemble(ops: &[Op]) -> Vec<Instruction> {
    let mut positions = [0usize; 3];
    let mut index = 0;
    for op in ops {
        match op {
            Op::Mark(label) => positions[*label as usize] = index,
            _ => index += 1,
        }
    }
    let mut out = Vec::new();
    for op in ops {
        let here = out.len();
        let offset =
            |label: Label| u8::try_from(positions[label as usize] - (here + 1)).unwrap_or(u8::MAX);
        match op {
            Op::Plain(instruction) => out.push(*instruction),
            Op::JumpIf(code, k, label) => out.push(Instruction {
                code: *code,
                jt: offset(*label),
                jf: 0,
                k: *k,
            }),
            Op::JumpUnless(code, k, label) => out.push(Instruction {
                code: *code,
                jt: 0,
                jf: offset(*label),
                k: *k,
            }),
            Op::Mark(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter on one syscall, the way the kernel would.
    fn run(program: &[Instruction], nr: u32, arch: u32, arg0: u32) -> u32 {
        let mut accumulator = 0;
        let mut pc = 0;
        loop {
            let instruction = program[pc];
            pc += 1;
            match instruction.code {
                LOAD_WORD => {
                    accumulator = match instruction.k {
                        NR => nr,
                        ARCH => arch,
                        ARG0_LOW => arg0,
                        other => panic!("load of offset {other}"),
                    }
                }
                RETURN => return instruction.k,
                code => {
                    let holds = match code {
                        JUMP_EQUAL => accumulator == instruction.k,
                        JUMP_GREATER_EQUAL => accumulator >= instruction.k,
                        JUMP_SET => accumulator & instruction.k != 0,
                        other => panic!("opcode {other:#x}"),
                    };
                    pc += usize::from(if holds {
                        instruction.jt
                    } else {
                        instruction.jf
                    });
                }
            }
        }
    }

    #[test]
    fn new_user_namespaces_are_refused_and_everything_else_passes() {
        let Some(arch) = Arch::current() else {
            return;
        };
        let program = program(arch);
        let audit = arch.audit;
        assert_eq!(
            run(&program, arch.unshare, audit, CLONE_NEWUSER),
            ERRNO | EPERM
        );
        assert_eq!(
            run(&program, arch.unshare, audit, CLONE_NEWUSER | 0x0002_0000),
            ERRNO | EPERM
        );
        assert_eq!(run(&program, arch.unshare, audit, 0x0002_0000), ALLOW);
        assert_eq!(
            run(&program, arch.clone, audit, CLONE_NEWUSER),
            ERRNO | EPERM
        );
        assert_eq!(run(&program, arch.clone, audit, 0x0001_1200), ALLOW); // a fork
        assert_eq!(run(&program, arch.clone3, audit, 0), ERRNO | ENOSYS);
        assert_eq!(run(&program, 0, audit, 0), ALLOW);
        assert_eq!(
            run(&program, arch.unshare, 0x4000_0003, CLONE_NEWUSER),
            ERRNO | EPERM
        );
        if let Some(bit) = arch.x32_bit {
            assert_eq!(run(&program, bit | arch.unshare, audit, 0), ERRNO | EPERM);
        }
        assert_eq!(filter().map(|bytes| bytes.len()), Some(program.len() * 8));
    }
}
