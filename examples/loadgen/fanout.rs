//! The `fanout` scenario: the storm at each `--sweep` group size (default 10, 100, 1,000 and
//! 5,000 members, 20% of them online), a fresh server per point: the cost per message as the
//! group grows.

use crate::args::{Args, Scenario};
use crate::report::set_fig_prefix;
use crate::server::{attach, finish_server, start_server};
use crate::storm::run_plan;
use crate::Error;

/// Runs a storm per sweep point.
pub fn fanout(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("fanout starts its own servers; drop --http".into());
    }
    let sweep = if args.sweep.is_empty() {
        vec![10, 100, 1000, 5000]
    } else {
        args.sweep.clone()
    };
    let mut clean = true;
    for &members in &sweep {
        set_fig_prefix(&format!("m{members}."));
        let mut a = args.clone();
        a.members = Some(usize::try_from(members)?);
        a.messages = Some(args.messages.unwrap_or(2_000));
        let plan = a.plan_for(Scenario::Fanout)?;
        println!("=== fanout: {members} members, {} online ===", plan.online);
        let (srv, _dir) = start_server(args)?;
        attach(&mut a, &srv);
        clean &= run_plan(&a, &plan)?;
        finish_server(srv);
    }
    set_fig_prefix("");
    Ok(clean)
}
