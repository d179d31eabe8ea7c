//! The scripted fake server a client check plays: La accepted, Lb connected, each line
//! compared byte for byte.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Socket, Type};
use std::sync::Arc;
use std::time::Instant;

use simple_im_core::client::{PASSWORD_PROMPT, USER_PROMPT};
use simple_im_core::protocol::{receipt_bytes, Delivery, Request, Response};

use super::process::ClientProcess;
use super::{without_newline, Ctx, PASSWORD, USER};
use crate::outcome::{escape, Failure, Got, Problem, Transcript};
use crate::wire::{accept, remaining, Conn};

/// What the client checks do around the client.
impl Ctx {
    /// The client started and logged in: La accepted, both prompts answered, the `/login`
    /// line checked (not answered yet).
    pub(super) fn start_login(&self) -> Result<Rig, Problem> {
        let mut rig = self.start()?;
        rig.accept_la()?;
        rig.login_as(USER, PASSWORD)?;
        Ok(rig)
    }

    /// The client started and ready for commands (see [`Rig::ready`]).
    pub(super) fn start_ready(&self) -> Result<Rig, Problem> {
        let mut rig = self.start()?;
        rig.ready()?;
        Ok(rig)
    }

    /// Starts the fake server and the client pointed at it.
    pub(super) fn start(&self) -> Result<Rig, Problem> {
        self.start_at(&Ipv4Addr::LOCALHOST.to_string())
    }

    /// Starts the fake server on 127.0.0.1 and the client pointed at it as `host` (an address
    /// or a name that resolves to it).
    pub(super) fn start_at(&self, host: &str) -> Result<Rig, Problem> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|error| Problem::Skip(format!("cannot listen on 127.0.0.1: {error}")))?;
        let port = listener
            .local_addr()
            .map_err(|error| Problem::Skip(format!("cannot listen on 127.0.0.1: {error}")))?
            .port();
        let client = ClientProcess::spawn_with(
            &self.config.command,
            self.config.dir.as_deref(),
            &[host.to_string(), port.to_string()],
            &self.transcript,
        )?;
        Ok(Rig {
            listener,
            client,
            la: None,
            lb: None,
            deadline: self.deadline,
            transcript: Arc::clone(&self.transcript),
        })
    }
}

/// The client under test and the fake server it talks to.
pub(super) struct Rig {
    listener: TcpListener,
    pub(super) client: ClientProcess,
    la: Option<Conn>,
    lb: Option<Conn>,
    deadline: Instant,
    transcript: Transcript,
}

impl Rig {
    /// Accepts the client's La.
    pub(super) fn accept_la(&mut self) -> Result<(), Failure> {
        let stream = accept(&self.listener, self.deadline).map_err(|got| {
            Failure::unexpected(
                "the fake server's listening port",
                "the client to connect",
                got,
            )
        })?;
        self.la = Some(Conn::new(stream, "La".into(), Arc::clone(&self.transcript)));
        Ok(())
    }

    pub(super) fn la(&mut self) -> Result<&mut Conn, Failure> {
        self.la
            .as_mut()
            .ok_or_else(|| Failure::new("im-check bug: La is not connected"))
    }

    pub(super) fn lb(&mut self) -> Result<&mut Conn, Failure> {
        self.lb
            .as_mut()
            .ok_or_else(|| Failure::new("im-check bug: Lb is not connected"))
    }

    /// The next line on La must be exactly `expected`.
    pub(super) fn expect_la(&mut self, expected: &[u8], context: &str) -> Result<(), Failure> {
        let deadline = self.deadline;
        self.la()?.expect_line(expected, deadline, context)
    }

    /// Sends `response` on La.
    pub(super) fn answer(&mut self, response: &Response) -> Result<(), Failure> {
        let deadline = self.deadline;
        self.la()?.send(&response.to_bytes(), deadline)
    }

    /// Sends `response` on La; the client must print it.
    pub(super) fn answer_shown(&mut self, response: &Response) -> Result<(), Failure> {
        self.answer(response)?;
        let shown = without_newline(&response.to_bytes());
        self.client.expect_output(&shown, self.deadline)
    }

    /// Types `line` (a command, `\n` and all) and checks the client sends exactly that on La;
    /// `context` names the moment for the report.
    pub(super) fn type_command(&mut self, line: &[u8], context: &str) -> Result<(), Failure> {
        self.client.type_line(&without_newline(line))?;
        self.expect_la(line, context)
    }

    /// Waits for a prompt (`prompt`, or a line worded otherwise: the `prompts` check is the
    /// one that compares them), then types `line`.
    pub(super) fn answer_prompt(&mut self, prompt: &[u8], line: &[u8]) -> Result<(), Failure> {
        self.client.expect_prompt_like(prompt, self.deadline)?;
        self.client.type_line(line)
    }

    /// Goes through both prompts and checks the `/login` line that follows.
    pub(super) fn login_as(&mut self, user: &[u8], password: &[u8]) -> Result<(), Failure> {
        self.answer_prompt(USER_PROMPT, user)?;
        self.answer_prompt(PASSWORD_PROMPT, password)?;
        let expected = Request::Login { user, password }.to_bytes();
        self.expect_la(&expected, "the client's login on La")
    }

    /// Reads the client's `/port <n>` and returns `n`.
    pub(super) fn expect_port(&mut self) -> Result<u16, Failure> {
        let deadline = self.deadline;
        let context = "the client's line on La after 101";
        match self.la()?.read_line(deadline) {
            Ok(line) => match Request::parse(line.strip_suffix(b"\n").unwrap_or(&line)) {
                Ok(Request::Port(port)) => Ok(port),
                _ => Err(Failure::unexpected(
                    context,
                    "\"/port <n>\\n\"",
                    Got::Bytes(line),
                )),
            },
            Err(got) => Err(Failure::unexpected(context, "\"/port <n>\\n\"", got)),
        }
    }

    /// Connects Lb to the client's port on 127.0.0.1.
    pub(super) fn connect_lb(&mut self, port: u16) -> Result<(), Failure> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let lb = Conn::connect(
            addr,
            self.deadline,
            "Lb".into(),
            Arc::clone(&self.transcript),
        )
        .map_err(|failure| {
            Failure::new(format!(
                "the client sent /port {port} but does not accept connections there ({})",
                failure.context
            ))
        })?;
        self.lb = Some(lb);
        Ok(())
    }

    /// A connection to the client's Lb `port` from another address than the server's
    /// (127.0.0.1), that has sent a message the client must neither show nor acknowledge.
    pub(super) fn connect_stranger(&mut self, port: u16) -> Result<Conn, Failure> {
        let stranger = Ipv4Addr::new(127, 0, 0, 2);
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)
            .and_then(|socket| {
                socket.bind(&SocketAddr::from((stranger, 0)).into())?;
                let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                socket.connect_timeout(&target.into(), remaining(self.deadline))?;
                Ok(socket)
            })
            .map_err(|error| {
                Failure::new(format!(
                    "cannot connect to the client's port {port} from {stranger}: {error}"
                ))
            })?;
        let mut conn = Conn::new(
            TcpStream::from(socket),
            format!("a stranger's Lb from {stranger}"),
            Arc::clone(&self.transcript),
        );
        conn.send(b"/from mallory trust me\n", self.deadline)?;
        Ok(conn)
    }

    /// La accepted, logged in, Lb connected, `201` sent: the client is ready for commands.
    pub(super) fn ready(&mut self) -> Result<(), Failure> {
        self.accept_la()?;
        self.login_as(USER, PASSWORD)?;
        self.answer(&Response::AuthOk)?;
        let port = self.expect_port()?;
        self.connect_lb(port)?;
        self.answer(&Response::LbOk)
    }

    /// Sends `delivery` on Lb; the answer must be exactly the receipt.
    pub(super) fn deliver(&mut self, delivery: &Delivery) -> Result<(), Failure> {
        let deadline = self.deadline;
        let bytes = delivery.to_bytes();
        let lb = self.lb()?;
        lb.send(&bytes, deadline)?;
        let context = format!("the client's answer on Lb to {}", escape(&bytes));
        lb.expect_line(&receipt_bytes(), deadline, &context)
    }

    /// Closes both connections, the way a crashed server would.
    pub(super) fn close_both(&mut self) {
        if let Some(lb) = &mut self.lb {
            lb.close();
        }
        if let Some(la) = &mut self.la {
            la.close();
        }
    }
}
