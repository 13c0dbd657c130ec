//! `pastiche report`: a job's contact sheet, loss curves, tables and index page.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use pastiche_coordinator::core::{reports, TaskInfo};
use pastiche_proto::{liveness, pb};
use pastiche_report::{build_report, write_to_dir, Placement, ReportJob, ReportOptions};
use pastiche_spec::store::Store;

use crate::farm::{self, Connection, StoreArg};
use pastiche_proto::pb::farm_client::FarmClient;
use pastiche_proto::security::AuthChannel;

#[derive(Args)]
pub struct ReportArgs {
    pub job: String,
    #[command(flatten)]
    pub store: StoreArg,
    /// Write the report (with copies of the pastiches) into this directory
    /// [default: into the store, under jobs/<job>/report/].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The parameter along the contact sheet's rows [default: the one with most values].
    #[arg(long)]
    pub rows: Option<String>,
    /// The parameter along its columns [default: the next; the rest nest in it].
    #[arg(long)]
    pub cols: Option<String>,
    /// Report only the tasks with this value (e.g. `backbone=vgg19`, `style_weight=1e4`,
    /// `style_depth=5`); repeated for one parameter, any of its values; for several,
    /// all of them. Needs --out: the report in the store is the whole job's.
    #[arg(long, value_name = "PARAM=VALUE", requires = "out")]
    pub only: Vec<String>,
    /// Asked for the tasks' states; without it, the store says which tasks are done.
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(args: ReportArgs) -> Result<()> {
    let store = Store::open(&args.store.store)?;
    let job = match farm::connect(&args.connection).await {
        Ok(client) => from_coordinator(client, &args.job).await?,
        Err(err) => {
            eprintln!(
                "note: no task states from the coordinator ({err:#}); reading the store: \
                 tasks without results are shown as unfinished"
            );
            // The coordinator's report knows which tasks failed or were
            // cancelled; one from the store alone does not replace it.
            let index = pastiche_report::index_key(&args.job)?;
            anyhow::ensure!(
                args.out.is_some() || !store.exists(&index).await?,
                "the store has the coordinator's report of job {} ({}), which a report \
                 from the store alone would replace; give --out DIR to write one elsewhere",
                args.job,
                farm::location(store.root(), &index)
            );
            reports::from_store(&store, &args.job).await?
        }
    };
    let job = if args.only.is_empty() {
        job
    } else {
        let slice = pastiche_report::slice(&job, &args.only)?;
        eprintln!(
            "{} of the job's {} tasks",
            slice.tasks.len(),
            job.tasks.len()
        );
        slice
    };
    let mut options = ReportOptions {
        rows: args.rows.clone(),
        cols: args.cols.clone(),
        placement: Placement::InStore,
    };
    let index = match &args.out {
        Some(dir) => {
            options.placement = Placement::Standalone;
            let files = build_report(&store, &job, &options).await?;
            write_to_dir(dir, &files)?;
            dir.join(pastiche_report::INDEX_HTML).display().to_string()
        }
        None => {
            let files = build_report(&store, &job, &options).await?;
            pastiche_report::write_to_store(&store, &job.id, &files).await?;
            farm::location(store.root(), &pastiche_report::index_key(&job.id)?)
        }
    };
    println!("{index}");
    Ok(())
}

async fn from_coordinator(mut client: FarmClient<AuthChannel>, job: &str) -> Result<ReportJob> {
    let status = client
        .get_job(liveness::request(pb::GetJobRequest {
            job_id: job.to_owned(),
        }))
        .await
        .map_err(farm::status_error)?
        .into_inner();
    let mut stream = client
        .list_tasks(pb::ListTasksRequest {
            job_id: job.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(farm::status_error)?
        .into_inner();
    let mut tasks = Vec::new();
    while let Some(task) = stream.message().await.map_err(farm::status_error)? {
        tasks.push(TaskInfo::try_from(task)?);
    }
    let names = status.input_names.into_iter().collect();
    Ok(reports::from_tasks(job, &status.name, tasks, &names))
}
