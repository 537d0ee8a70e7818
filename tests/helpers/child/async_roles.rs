//! Children that use `readyfd::tokio` (`async-*`), for `tests/async_*.rs`.

use std::sync::{Arc, Mutex};

use readyfd::tokio::{Channel, Incoming, IncomingRequest, Parent};
use readyfd::{ChannelOptions, Ready, RemoteErrorKind, ShutdownPolicy};

use crate::protocol::AsyncReq;

type Held = Arc<Mutex<Vec<(IncomingRequest, u64)>>>;

pub(crate) fn run(role: &str, args: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match role {
            // Ready with an address, then serve every request in its
            // own task until the parent goes away. `deliver`: handle
            // Shutdown here and exit 0 (default: it raises SIGTERM).
            "async-child" => serve(args.get(1).map(String::as_str) == Some("deliver")).await,
            // `fd-victim` with the tokio driver: print the fd count, wait
            // for the channel to fail, print the error and the count again.
            "async-fd-victim" => fd_victim().await,
            other => {
                eprintln!("unknown async role {other:?}");
                std::process::exit(64);
            }
        }
    });
}

async fn serve(deliver: bool) {
    let options = ChannelOptions::new().shutdown(if deliver {
        ShutdownPolicy::Deliver
    } else {
        ShutdownPolicy::RaiseSigterm
    });
    let parent = match Parent::from_env_with(options) {
        Ok(Some(p)) => p,
        Ok(None) => std::process::exit(90),
        Err(e) => {
            eprintln!("test child: {e}");
            std::process::exit(91);
        }
    };
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    parent.status("starting").await.unwrap();
    let ready = Ready::new(std::process::id())
        .address("http", tcp.local_addr().unwrap())
        .status("serving async");
    parent.ready(&ready).await.unwrap();
    let ch = Arc::new(parent.into_channel());
    let held: Held = Arc::default();
    loop {
        match ch.recv().await {
            Ok(Incoming::Request(req)) => {
                let (ch, held) = (Arc::clone(&ch), Arc::clone(&held));
                tokio::spawn(async move { handle(&ch, req, &held).await });
            }
            Ok(Incoming::Notify(n)) => {
                let v: u32 = n.decode().unwrap_or(u32::MAX);
                let _ = ch.notify(&v).await;
            }
            Ok(Incoming::Shutdown(s)) => {
                drop(s.acknowledge());
                std::process::exit(0);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

async fn handle(ch: &Channel, req: IncomingRequest, held: &Held) {
    match req.decode::<AsyncReq>() {
        Ok(AsyncReq::Echo(s)) => drop(req.respond(&s)),
        Ok(AsyncReq::AskParent) => {
            let answer: Result<String, _> = ch.request(&"secret please").await;
            drop(req.respond(&answer.map_err(|e| e.to_string())));
        }
        Ok(AsyncReq::Notify(n)) => {
            for i in 0..n {
                ch.notify(&i).await.unwrap();
            }
            drop(req.respond(&n));
        }
        Ok(AsyncReq::Hold { n, value }) => {
            let batch = {
                let mut h = held.lock().unwrap();
                h.push((req, value));
                if h.len() < n {
                    return;
                }
                std::mem::take(&mut *h)
            };
            for (req, value) in batch.into_iter().rev() {
                drop(req.respond(&value));
            }
        }
        Ok(AsyncReq::Fail) => drop(req.reject(RemoteErrorKind::Failed, "asked to fail")),
        Ok(AsyncReq::PauseUntilStdin) => {
            // The answer is written before `respond` returns (the
            // socket has room), then the whole runtime stops.
            drop(req.respond(&()));
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        Err(e) => drop(req.reject(RemoteErrorKind::BadRequest, e.to_string())),
    }
}

async fn fd_victim() {
    use std::io::Write;
    let parent = Parent::from_env().unwrap().unwrap();
    let count = || std::fs::read_dir("/proc/self/fd").unwrap().count() - 1;
    println!("before {}", count());
    std::io::stdout().flush().unwrap();
    let err = loop {
        match parent.recv().await {
            Ok(m) => drop(m),
            Err(e) => break e,
        }
    };
    println!("error {err:?}");
    println!("after {}", count());
    std::io::stdout().flush().unwrap();
}
