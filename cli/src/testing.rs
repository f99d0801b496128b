//! A fake herzog for unit tests: serves the real Coordinator service over real TCP (with the
//! hello frame) from an in-memory state that tests set up and inspect.

use crate::client::Herzog;
use common::ApiError;
use common::service::Coordinator;
use common::wire::*;
use common::{AttemptId, ProjectId};
use futures::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};

#[derive(Debug, Default)]
pub(crate) struct FakeState {
    pub(crate) projects: Vec<ProjectProgress>,
    pub(crate) fragments: HashMap<String, Vec<FragmentInfo>>,
    pub(crate) added: Vec<NewProject>,
    /// Each progress call moves one pending fragment of every project to done; projects
    /// whose name contains "fail" fail it.
    pub(crate) advance: bool,
    pub(crate) progress_calls: u32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct FakeHerzog(Arc<Mutex<FakeState>>);

impl FakeHerzog {
    pub(crate) fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_fragments(&self, project: &str, fragments: Vec<FragmentInfo>) {
        self.state().fragments.insert(project.to_string(), fragments);
    }

    /// Listens on loopback and returns a client connected to it.
    pub(crate) async fn start(&self) -> Herzog {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let fake = fake.clone();
                tokio::spawn(async move {
                    if common::transport::read_hello(&mut stream).await.is_err() {
                        return;
                    }
                    let channel = BaseChannel::with_defaults(common::transport::json_transport(stream));
                    channel
                        .execute(fake.serve())
                        .for_each(|call| async {
                            tokio::spawn(call);
                        })
                        .await;
                });
            }
        });
        Herzog::connect(&addr).await.unwrap()
    }
}

/// A project with `total` pending fragments.
pub(crate) fn project(name: &str, total: u64) -> ProjectProgress {
    ProjectProgress {
        id: ProjectId(1),
        name: name.to_string(),
        dir: PathBuf::from(format!("/data/{name}")),
        program: "wc -l".to_string(),
        total,
        pending: total,
        running: 0,
        succeeded: 0,
        failed: 0,
        percent: 0.0,
        created_at: 0,
        results_dir: PathBuf::from(format!("/state/results/{name}")),
    }
}

/// Fragment `i`: every tenth one failed, the rest succeeded.
pub(crate) fn fragment(i: u64) -> FragmentInfo {
    let failed = i % 10 == 9;
    FragmentInfo {
        index: i,
        name: format!("f{i}.txt"),
        state: if failed {
            FragmentStateKind::Failed
        } else {
            FragmentStateKind::Succeeded
        },
        attempts: 1,
        attempt: Some(AttemptId(i as i64)),
        worker: Some("w".to_string()),
        exit: Some(Exit::Code(if failed { 1 } else { 0 })),
        wall_ms: Some(1200),
        cpu_ms: Some(900),
        peak_rss_kb: Some(1024),
        reason: failed.then(|| "exited with 1".to_string()),
    }
}

fn unknown(name: &str) -> ApiError {
    ApiError::UnknownProject { name: name.to_string() }
}

impl Coordinator for FakeHerzog {
    async fn project_add(self, _: Context, project: NewProject) -> Result<ProjectAdded, ApiError> {
        let mut s = self.state();
        let name = project
            .name
            .clone()
            .unwrap_or_else(|| common::name::name_from_dir(&project.dir));
        if s.projects.iter().any(|p| p.name == name) {
            return Err(ApiError::DuplicateProject { name });
        }
        let mut p = self::project(&name, 3);
        p.dir = project.dir.clone();
        p.program = project.spec.program.clone();
        let added = ProjectAdded {
            id: p.id,
            name,
            fragments: p.total,
            results_dir: p.results_dir.clone(),
        };
        s.projects.push(p);
        s.added.push(project);
        Ok(added)
    }

    async fn project_remove(self, _: Context, name: String) -> Result<(), ApiError> {
        let mut s = self.state();
        let before = s.projects.len();
        s.projects.retain(|p| p.name != name);
        if s.projects.len() == before {
            Err(unknown(&name))
        } else {
            Ok(())
        }
    }

    async fn project_progress(self, _: Context, name: Option<String>) -> Result<Vec<ProjectProgress>, ApiError> {
        let mut s = self.state();
        s.progress_calls += 1;
        if s.advance {
            for p in &mut s.projects {
                if p.pending > 0 {
                    p.pending -= 1;
                    if p.name.contains("fail") {
                        p.failed += 1;
                    } else {
                        p.succeeded += 1;
                    }
                    p.percent = 100.0 * (p.succeeded + p.failed) as f64 / p.total as f64;
                }
            }
        }
        match name {
            None => Ok(s.projects.clone()),
            Some(name) => match s.projects.iter().find(|p| p.name == name) {
                Some(p) => Ok(vec![p.clone()]),
                None => Err(unknown(&name)),
            },
        }
    }

    async fn project_retry(self, _: Context, name: String) -> Result<u64, ApiError> {
        let mut s = self.state();
        let p = s
            .projects
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| unknown(&name))?;
        let failed = std::mem::take(&mut p.failed);
        p.pending += failed;
        Ok(failed)
    }

    async fn project_schedule(self, _: Context, policy: Policy) -> Result<Policy, ApiError> {
        Ok(policy)
    }

    async fn policy(self, _: Context) -> Policy {
        Policy::Fair
    }

    async fn project_active(self, _: Context) -> Vec<ActiveAttempt> {
        Vec::new()
    }

    async fn workers(self, _: Context) -> Vec<WorkerInfo> {
        Vec::new()
    }

    async fn fragments(
        self,
        _: Context,
        project: String,
        offset: u64,
        limit: u32,
    ) -> Result<Page<FragmentInfo>, ApiError> {
        let s = self.state();
        let all = s.fragments.get(&project).ok_or_else(|| unknown(&project))?;
        let start = (offset as usize).min(all.len());
        let end = (start + limit as usize).min(all.len());
        Ok(Page {
            items: all[start..end].to_vec(),
            next: (end < all.len()).then_some(end as u64),
            total: all.len() as u64,
        })
    }

    async fn logs(self, _: Context, project: String, fragment: String, _max_bytes: u64) -> Result<Logs, ApiError> {
        if project != "p" {
            return Err(unknown(&project));
        }
        if fragment != "a.txt" && fragment != "0" {
            return Err(ApiError::UnknownFragment { project, fragment });
        }
        Ok(Logs {
            attempt: Some(AttemptId(1)),
            stdout_path: Some(PathBuf::from("/r/a.out")),
            stderr_path: Some(PathBuf::from("/r/a.err")),
            stdout: "out line\n".to_string(),
            stderr: "err line\n".to_string(),
            truncated: false,
        })
    }
}
