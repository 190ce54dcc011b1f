//! fabrik's side: start the host's agent command and forward every driver call to it.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};

use super::line::{Line, RESPONSE_LINE_BYTES_MAX, read_line};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::{Call, Hello, Outcome, PROTOCOL_VERSION, Request, Response, VERSION_MISMATCH};
use crate::driver::{DriverError, ErrorKind, Gpus, Guid, LinkSpec, Links, Result};
use crate::live::{LiveGpu, LiveHugepages, LiveLink, MigMode};
use crate::lockfile::Holder;
use crate::spec::types::{PageSize, PciAddress};

/// How long a call may take before the agent counts as unreachable. Generous: a call
/// may set hugepages or VFs, which the kernel can take seconds over.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// How much of the agent's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 2048;
/// How long a dead agent is given to exit and finish its stderr before it is reported.
const EXIT_GRACE: Duration = Duration::from_millis(500);
/// How long a dropped client waits for its agent to exit after closing its stdin.
const DROP_GRACE: Duration = Duration::from_secs(2);

/// A connection to one host's agent, implementing [`Gpus`] and [`Links`] by forwarding.
pub struct AgentClient {
    /// The command line, credentials masked (or a description of the stream), for messages.
    name: String,
    /// The command's credentials, masked in the stderr it shows.
    secrets: Vec<String>,
    child: Option<Child>,
    writer: Option<Box<dyn Write + Send>>,
    lines: mpsc::Receiver<io::Result<String>>,
    stderr: Arc<Mutex<Tail>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
    next_id: u64,
    timeout: Duration,
    /// Set once the agent is gone; every later call returns it.
    dead: Option<DriverError>,
    hello: Hello,
}

/// The last bytes of the agent's stderr.
#[derive(Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend(bytes);
        let excess = self.0.len().saturating_sub(STDERR_TAIL_BYTES);
        self.0.drain(..excess);
    }

    fn text(&self) -> String {
        let bytes: Vec<u8> = self.0.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

fn agent_unreachable(message: String) -> DriverError {
    DriverError::new(ErrorKind::Unreachable, message)
}

impl AgentClient {
    /// Starts an agent command (`ssh root@gpu01 fabrik agent`), split like a POSIX shell
    /// would split it, and greets it. Its stderr is kept for error messages.
    pub fn spawn(command_line: &str) -> Result<AgentClient> {
        AgentClient::spawn_with_timeout(command_line, CALL_TIMEOUT_DEFAULT)
    }

    pub fn spawn_with_timeout(command_line: &str, timeout: Duration) -> Result<AgentClient> {
        // The command as messages show it: its credentials masked.
        let shown = crate::diag::redact::command(command_line);
        let words = shell_words::split(command_line).map_err(|e| {
            DriverError::new(ErrorKind::Failed, format!("agent command `{shown}` cannot be split: {e}"))
        })?;
        let Some((program, args)) = words.split_first() else {
            return Err(DriverError::new(ErrorKind::Failed, "the agent command is empty"));
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| agent_unreachable(format!("starting agent `{shown}`: {e}")))?;
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(mut stderr)) = (stdin, stdout, stderr) else {
            unreachable!("all three streams were piped");
        };
        let tail = Arc::new(Mutex::new(Tail::default()));
        let keep = Arc::clone(&tail);
        let stderr_reader = thread::spawn(move || {
            let mut buffer = [0; 1024];
            while let Ok(n @ 1..) = stderr.read(&mut buffer) {
                keep.lock().unwrap_or_else(|e| e.into_inner()).push(&buffer[..n]);
            }
        });
        let mut client = AgentClient::connect(shown, stdout, Box::new(stdin), timeout);
        client.secrets = crate::diag::redact::command_secrets(command_line);
        client.child = Some(child);
        client.stderr = tail;
        client.stderr_reader = Some(stderr_reader);
        client.greet()?;
        Ok(client)
    }

    /// Speaks to an agent over an existing stream pair (a pipe to an in-process server).
    pub fn over(
        name: &str,
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
        timeout: Duration,
    ) -> Result<AgentClient> {
        let mut client = AgentClient::connect(name.to_string(), reader, Box::new(writer), timeout);
        client.greet()?;
        Ok(client)
    }

    fn connect(
        name: String,
        reader: impl Read + Send + 'static,
        writer: Box<dyn Write + Send>,
        timeout: Duration,
    ) -> AgentClient {
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            loop {
                let line = match read_line(&mut reader, RESPONSE_LINE_BYTES_MAX) {
                    Ok(None) => break,
                    Ok(Some(Line::Text(text))) => Ok(text),
                    Ok(Some(Line::TooLong)) => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the agent answered a line longer than {RESPONSE_LINE_BYTES_MAX} bytes"),
                    )),
                    Ok(Some(Line::NotUtf8)) => {
                        Err(io::Error::new(io::ErrorKind::InvalidData, "the agent answered a line that is not UTF-8"))
                    }
                    Err(e) => Err(e),
                };
                let failed = line.is_err();
                if tx.send(line).is_err() || failed {
                    break;
                }
            }
        });
        AgentClient {
            name,
            secrets: Vec::new(),
            child: None,
            writer: Some(writer),
            lines,
            stderr: Arc::default(),
            stderr_reader: None,
            next_id: 0,
            timeout,
            dead: None,
            hello: Hello::here(),
        }
    }

    fn greet(&mut self) -> Result<()> {
        self.hello = self.call(Call::Hello)?;
        if self.hello.protocol != PROTOCOL_VERSION {
            return Err(self.mismatch(self.hello.protocol));
        }
        Ok(())
    }

    /// The agent's protocol and fabrik versions, from the greeting.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Changes how long each call may take.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn mismatch(&self, theirs: u32) -> DriverError {
        DriverError::new(
            ErrorKind::Unsupported,
            format!(
                "protocol version mismatch: agent `{}` speaks v{theirs}, this fabrik ({}) speaks v{PROTOCOL_VERSION}; \
                 install the same fabrik version on both sides",
                self.name,
                env!("CARGO_PKG_VERSION")
            ),
        )
        .with_code(VERSION_MISMATCH)
    }

    /// Marks the agent dead, with what it said on stderr and how it exited.
    fn died(&mut self, what: String) -> DriverError {
        let deadline = Instant::now() + EXIT_GRACE;
        let mut status = None;
        if let Some(child) = &mut self.child {
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(s)) => {
                        status = Some(s);
                        break;
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(10)),
                    Err(_) => break,
                }
            }
        }
        while self.stderr_reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let mut message = format!("agent `{}` is unreachable: {what}", self.name);
        if let Some(status) = status {
            message += &format!(" ({status})");
        }
        let mut tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).text();
        // A program that echoes its arguments (`sshpass`, a shell with `-x`) must not
        // carry the command's credentials into the message.
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            tail = tail.replace(secret.as_str(), crate::diag::redact::MASK);
        }
        if !tail.is_empty() {
            message += &format!("; its stderr ends with: {tail}");
        }
        let error = agent_unreachable(message);
        self.writer = None;
        self.dead = Some(error.clone());
        error
    }

    /// Takes the apply lock of `factory` on the agent's host for `holder`, without
    /// waiting; the agent holds it until this client is dropped (or dies). Refused with
    /// the code [`super::LOCKED`] while another apply holds it.
    pub fn lock(&mut self, factory: &str, host: &str, holder: &Holder) -> Result<()> {
        self.call(Call::Lock { factory: factory.to_string(), host: host.to_string(), holder: holder.clone() })
    }

    /// Sends one call and waits for its answer.
    fn call<T: DeserializeOwned>(&mut self, call: Call) -> Result<T> {
        if let Some(dead) = &self.dead {
            return Err(dead.clone());
        }
        self.next_id += 1;
        let id = self.next_id;
        let name = call.name();
        let mut line = serde_json::to_string(&Request { v: PROTOCOL_VERSION, id, call })
            .map_err(|e| DriverError::new(ErrorKind::Failed, format!("encoding `{name}`: {e}")))?;
        line.push('\n');
        let sent = match self.writer.as_mut() {
            Some(writer) => writer.write_all(line.as_bytes()).and_then(|()| writer.flush()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        if let Err(e) = sent {
            return Err(self.died(format!("sending `{name}`: {e}")));
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(Ok(line)) => line,
                Ok(Err(e)) => return Err(self.died(format!("reading the answer to `{name}`: {e}"))),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.died(format!("it closed its output before answering `{name}`")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(agent_unreachable(format!(
                        "agent `{}` did not answer `{name}` within {:?} (the call may still complete)",
                        self.name, self.timeout
                    ))
                    .with_code(super::TIMED_OUT));
                }
            };
            // Lines that are not responses (a login banner) and answers to calls that
            // timed out earlier are skipped.
            let Ok(response) = serde_json::from_str::<Response>(&line) else {
                match serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v.get("v")?.as_u64()) {
                    Some(v) if v != u64::from(PROTOCOL_VERSION) => return Err(self.mismatch(v as u32)),
                    _ => continue,
                }
            };
            if response.v != PROTOCOL_VERSION {
                return Err(self.mismatch(response.v));
            }
            if response.id.is_some_and(|i| i != id) {
                continue;
            }
            return match response.outcome {
                Outcome::Err(error) => Err(error),
                Outcome::Ok(value) => serde_json::from_value(value).map_err(|e| {
                    DriverError::new(ErrorKind::Failed, format!("agent `{}` answered `{name}` with {e}", self.name))
                }),
            };
        }
    }
}

impl Drop for AgentClient {
    /// Closes the agent's stdin, which ends it; one that lingers is killed.
    fn drop(&mut self) {
        self.writer = None;
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + DROP_GRACE;
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Gpus for AgentClient {
    fn gpus(&mut self) -> Result<Vec<LiveGpu>> {
        self.call(Call::Gpus)
    }

    fn set_mig_mode(&mut self, gpu: PciAddress, enabled: bool) -> Result<MigMode> {
        self.call(Call::SetMigMode { gpu, enabled })
    }

    fn create_instance(&mut self, gpu: PciAddress, profile_id: u32, start: u8) -> Result<u32> {
        self.call(Call::CreateInstance { gpu, profile_id, start })
    }

    fn destroy_instance(&mut self, gpu: PciAddress, instance_id: u32) -> Result<()> {
        self.call(Call::DestroyInstance { gpu, instance_id })
    }

    fn create_vgpu(
        &mut self,
        gpu: PciAddress,
        profile: &str,
        start: u8,
        uuid: &str,
        vf: Option<PciAddress>,
    ) -> Result<crate::driver::vgpu::VgpuDevice> {
        self.call(Call::CreateVgpu { gpu, profile: profile.to_string(), start, uuid: uuid.to_string(), vf })
    }

    fn remove_vgpu(&mut self, gpu: PciAddress, uuid: &str, vf: Option<PciAddress>) -> Result<()> {
        self.call(Call::RemoveVgpu { gpu, uuid: uuid.to_string(), vf })
    }
}

impl Links for AgentClient {
    fn links(&mut self) -> Result<Vec<LiveLink>> {
        self.call(Call::Links)
    }

    fn boot_id(&mut self) -> Result<Option<String>> {
        self.call(Call::BootId)
    }

    fn hugepages(&mut self) -> Result<Vec<LiveHugepages>> {
        self.call(Call::Hugepages)
    }

    fn create_link(&mut self, spec: &LinkSpec) -> Result<()> {
        self.call(Call::CreateLink { spec: spec.clone() })
    }

    fn delete_link(&mut self, name: &str) -> Result<()> {
        self.call(Call::DeleteLink { name: name.to_string() })
    }

    fn set_link(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<Option<String>>,
    ) -> Result<()> {
        self.call(Call::SetLink { name: name.to_string(), mtu, up, master })
    }

    fn add_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        self.call(Call::AddFdb { vxlan: vxlan.to_string(), remote })
    }

    fn del_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        self.call(Call::DelFdb { vxlan: vxlan.to_string(), remote })
    }

    fn set_sriov_vfs(&mut self, nic: &str, count: u32) -> Result<()> {
        self.call(Call::SetSriovVfs { nic: nic.to_string(), count })
    }

    fn set_vf_guids(&mut self, pf: &str, vf: u32, node: Guid, port: Guid) -> Result<()> {
        self.call(Call::SetVfGuids { pf: pf.to_string(), vf, node, port })
    }

    fn read_partitions(&mut self, path: &str) -> Result<Option<String>> {
        self.call(Call::ReadPartitions { path: path.to_string() })
    }

    fn write_partitions(&mut self, path: &str, factory: &str, block: &str) -> Result<()> {
        self.call(Call::WritePartitions {
            path: path.to_string(),
            factory: factory.to_string(),
            block: block.to_string(),
        })
    }

    fn reload_subnet_manager(&mut self) -> Result<()> {
        self.call(Call::ReloadSubnetManager)
    }

    fn set_hugepages(&mut self, numa_node: u32, size: PageSize, count: u64) -> Result<()> {
        self.call(Call::SetHugepages { numa_node, size, count })
    }
}
