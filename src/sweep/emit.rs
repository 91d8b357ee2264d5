//! Job definitions for cluster schedulers, in which array task *i* runs planned run *i*
//! (`gantry sweep run SWEEP/sweep.toml --out SWEEP --task i`): a Slurm job-array script and a
//! Kubernetes Indexed Job. Resubmitting either is safe: a task whose run finished does nothing, a
//! preempted one resumes from its checkpoint (Slurm and Kubernetes send SIGTERM first; gantry
//! checkpoints on it).

use std::path::Path;

/// What the job definitions need.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub name: &'a str,
    pub runs: usize,
    /// The sweep folder, absolute (where the cluster's shared file system has it).
    pub sweep: &'a Path,
    /// The gantry executable, as the cluster's nodes see it.
    pub gantry: &'a Path,
    /// CPUs per task.
    pub threads: usize,
    /// Tasks at a time (0: as many as the scheduler allows).
    pub parallel: usize,
}

/// `sweep.sbatch`: a Slurm job array over the planned runs.
pub fn slurm(t: &Target) -> String {
    let last = t.runs.saturating_sub(1);
    let throttle = if t.parallel > 0 { format!("%{}", t.parallel) } else { String::new() };
    let spec = t.sweep.join(super::local::SPEC_FILE);
    let logs = t.sweep.join(super::local::LOGS);
    format!(
        "#!/bin/bash\n\
         # gantry sweep `{name}`: {runs} runs as a Slurm job array; task i runs planned run i\n\
         # (`gantry sweep --dry-run` lists them). Submit with: sbatch {script}\n\
         # Resubmitting is safe: a finished run does nothing, an unfinished one resumes.\n\
         #SBATCH --job-name=gantry-{name}\n\
         #SBATCH --array=0-{last}{throttle}\n\
         #SBATCH --cpus-per-task={threads}\n\
         #SBATCH --output={logs}/task-%a.log\n\
         #SBATCH --open-mode=append\n\
         #SBATCH --requeue\n\
         exec {gantry} sweep run {spec} --out {sweep} --task \"$SLURM_ARRAY_TASK_ID\" \\\n    \
         --threads \"${{SLURM_CPUS_PER_TASK:-{threads}}}\" --quiet\n",
        name = t.name,
        runs = t.runs,
        script = quote(&t.sweep.join("sweep.sbatch")),
        threads = t.threads,
        logs = logs.display(),
        gantry = quote(t.gantry),
        spec = quote(&spec),
        sweep = quote(t.sweep),
    )
}

/// `sweep-k8s.yaml`: a Kubernetes Indexed Job over the planned runs (completion index i runs
/// planned run i). The sweep folder must be the same path inside the pods: a volume holding it
/// is mounted there (a PersistentVolumeClaim `gantry-sweeps`, to be adapted to the cluster).
pub fn kubernetes(t: &Target, image: &str) -> String {
    let parallel = if t.parallel > 0 { t.parallel } else { t.runs };
    let spec = t.sweep.join(super::local::SPEC_FILE);
    let mount = t.sweep.display().to_string();
    format!(
        "# gantry sweep `{name}`: {runs} runs as a Kubernetes Indexed Job; completion index i runs\n\
         # planned run i. Apply with: kubectl apply -f {file}\n\
         # Re-creating the Job is safe: a finished run does nothing, an unfinished one resumes.\n\
         apiVersion: batch/v1\n\
         kind: Job\n\
         metadata:\n  name: gantry-{k8s_name}\n\
         spec:\n  completionMode: Indexed\n  completions: {runs}\n  parallelism: {parallel}\n  \
         backoffLimitPerIndex: 3\n  template:\n    spec:\n      restartPolicy: Never\n      \
         containers:\n        - name: gantry\n          image: {image}\n          \
         command: [{gantry}, \"sweep\", \"run\", {spec}, \"--out\", {sweep}, \"--task\", \"$(JOB_COMPLETION_INDEX)\", \"--threads\", \"{threads}\", \"--quiet\"]\n          \
         resources:\n            requests:\n              cpu: \"{threads}\"\n          \
         volumeMounts:\n            - name: sweeps\n              mountPath: {mount}\n      \
         volumes:\n        - name: sweeps\n          persistentVolumeClaim:\n            claimName: gantry-sweeps\n",
        name = t.name,
        k8s_name = t.name.to_ascii_lowercase().replace(['_', '.', '+'], "-"),
        runs = t.runs,
        file = t.sweep.join("sweep-k8s.yaml").display(),
        image = json_str(image),
        gantry = json_str(&t.gantry.display().to_string()),
        spec = json_str(&spec.display().to_string()),
        sweep = json_str(&mount),
        mount = json_str(&mount),
        threads = t.threads,
    )
}

/// A path as one shell word.
fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// A string as a JSON (and so YAML flow) string.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(sweep: &Path) -> Target<'_> {
        Target { name: "order", runs: 10, sweep, gantry: Path::new("/opt/gantry"), threads: 2, parallel: 4 }
    }

    #[test]
    fn slurm_array_task_i_runs_planned_run_i() {
        let s = slurm(&target(Path::new("/shared/it's/order")));
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("#SBATCH --array=0-9%4\n"), "{s}");
        assert!(s.contains("#SBATCH --cpus-per-task=2\n"));
        assert!(s.contains("--task \"$SLURM_ARRAY_TASK_ID\""));
        assert!(s.contains("'/shared/it'\\''s/order/sweep.toml'"), "quoted for the shell: {s}");
        assert!(s.contains("exec '/opt/gantry' sweep run "));
    }

    #[test]
    fn kubernetes_indexed_job_passes_the_completion_index() {
        let k = kubernetes(&target(Path::new("/shared/order")), "registry/gantry:1");
        assert!(k.contains("completionMode: Indexed\n  completions: 10\n  parallelism: 4\n"), "{k}");
        assert!(k.contains("\"--task\", \"$(JOB_COMPLETION_INDEX)\""));
        assert!(k.contains("image: \"registry/gantry:1\""));
        assert!(k.contains("mountPath: \"/shared/order\""));
        assert!(k.contains("name: gantry-order\n"));
    }
}
