using System.Diagnostics;
using System.Security.Cryptography;
using GptSharp.Checkpoints;
using GptSharp.Training;

namespace GptSharp.Tests.Distributed;

/// <summary>
/// Data-parallel training under Open MPI's real <c>mpirun</c>, against its reference: one process with
/// <c>--grad-accum</c> equal to the ranks. The CLI runs as a child process (<c>dotnet GptSharp.Cli.dll</c>) on a tiny
/// model; tests skip visibly where Open MPI is not installed.
/// </summary>
public sealed class MpiTrainingTests : MpiRunDirectory
{
    [SkippableFact]
    public void TwoRanksEqualGradAccumTwoAndResumeAcrossWorldSizes()
    {
        SystemTools.SkipUnlessInstalled("mpirun", SystemTools.MpiInstall);
        string single = Path.Combine(Dir, "single"), ranks = Path.Combine(Dir, "ranks");

        // The equivalence rule: 2 ranks x --batch-size 1 == one process x --batch-size 1 x --grad-accum 2.
        var one = MpiRuns.Cli(processes: 1, [.. MpiRuns.Tiny, "--grad-accum", "2", "--max-steps", "4", "--out", single]);
        // Rank 1 is given another --out (MPMD launch): rank 0 alone writes, so that directory must never appear.
        string cli = MpiRuns.CliPath(), rank1Out = ranks + "-rank1";
        var two = MpiRuns.Run("mpirun", [.. MpiRuns.MpirunOptions, "-np", "1", "dotnet", cli, .. MpiRuns.Tiny, "--max-steps", "4", "--out", ranks,
            ":", "-np", "1", "dotnet", cli, .. MpiRuns.Tiny, "--max-steps", "4", "--out", rank1Out], TimeSpan.FromSeconds(180));
        Assert.True(two.ExitCode == 0, $"exit {two.ExitCode}: {two.Output}");
        Assert.False(Directory.Exists(rank1Out));
        Assert.Contains("Distributed: 2 ranks x --batch-size 1 x --grad-accum 1 = 2 sequences per step", two.Output);
        Assert.Equal(MpiRuns.BookLines(one.Output), MpiRuns.BookLines(two.Output));
        Assert.Equal(2, MpiRuns.BookLines(one.Output).Count(l => l.StartsWith("Ep 1", StringComparison.Ordinal)));
        MpiRuns.AssertSameWeights(single, ranks);
        // The ranks' optimizer is sharded: rank 0 gathers every rank's share of the moments into the one checkpoint format.
        MpiRuns.AssertSameMoments(single, ranks);
        Assert.Equal(TrainingCheckpoint.FileNameFor(4), Path.GetFileName(TrainingCheckpoint.Latest(ranks)));
        Assert.Equal(2, TrainingCheckpoint.ReadContents(TrainingCheckpoint.Latest(ranks)!).State.WorldSize);

        // Resume each on the other world size: both go on with the same numbers.
        var twoFromOne = MpiRuns.Cli(processes: 2, ["train", "--resume", single, "--max-steps", "8"]);
        var oneFromTwo = MpiRuns.Cli(processes: 1, ["train", "--resume", ranks, "--max-steps", "8"]);
        Assert.Contains("continuing on 2 with --grad-accum 1 (same global batch)", twoFromOne.Output);
        Assert.Contains("continuing on 1 with --grad-accum 2 (same global batch)", oneFromTwo.Output);
        Assert.Equal(MpiRuns.BookLines(oneFromTwo.Output), MpiRuns.BookLines(twoFromOne.Output));
        Assert.Equal(2, MpiRuns.BookLines(oneFromTwo.Output).Count(l => l.StartsWith("Ep 1", StringComparison.Ordinal)));
        MpiRuns.AssertSameWeights(single, ranks);
        MpiRuns.AssertSameMoments(single, ranks);
        Assert.Equal(File.ReadAllText(Path.Combine(single, RunDirectory.MetricsFile)).Split('\n').Select(MpiRuns.LossColumns),
            File.ReadAllText(Path.Combine(ranks, RunDirectory.MetricsFile)).Split('\n').Select(MpiRuns.LossColumns));
    }
}

/// <summary>Faults under mpirun: settings that differ between ranks, a killed rank.</summary>
public sealed class MpiFaultTests : MpiRunDirectory
{
    [SkippableFact]
    public void MismatchedSettingsStopEveryRankAtStart()
    {
        SystemTools.SkipUnlessInstalled("mpirun", SystemTools.MpiInstall);
        // MPMD launch: rank 1 gets another seed.
        string cli = MpiRuns.CliPath();
        var run = MpiRuns.Run("mpirun", [.. MpiRuns.MpirunOptions, "-np", "1", "dotnet", cli, .. MpiRuns.Tiny, "--seed", "1", "--out", Path.Combine(Dir, "a"),
            ":", "-np", "1", "dotnet", cli, .. MpiRuns.Tiny, "--seed", "2", "--out", Path.Combine(Dir, "a")], TimeSpan.FromSeconds(120));
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains("rank(s) 1 of 2 were started with settings", run.Output);
        Assert.DoesNotContain("Ep 1", run.Output);
        Assert.Null(TrainingCheckpoint.Latest(Path.Combine(Dir, "a")));
        Assert.False(File.Exists(Path.Combine(Dir, "a", RunDirectory.ConfigFile))); // stopped before rank 0 wrote anything
    }

    [SkippableFact]
    public void AKilledRankStopsTheOthersWithinBoundedTimeAndTheCheckpointSurvives()
    {
        SystemTools.SkipUnlessInstalled("mpirun", SystemTools.MpiInstall);
        string dir = Path.Combine(Dir, "run");
        MpiRuns.Cli(processes: 1, [.. MpiRuns.Tiny, "--grad-accum", "2", "--max-steps", "2", "--out", dir]);
        string checkpoint = TrainingCheckpoint.Latest(dir)!;
        Assert.Equal(TrainingCheckpoint.FileNameFor(2), Path.GetFileName(checkpoint));
        byte[] before = SHA256.HashData(File.ReadAllBytes(checkpoint));

        // Resume it on two ranks to the end of the epoch (far longer than the test), then kill rank 1 once it trains.
        var start = new ProcessStartInfo("mpirun") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in (string[])[.. MpiRuns.MpirunOptions, "-np", "2", "dotnet", MpiRuns.CliPath(), "train", "--resume", dir, "--max-steps", "100000"])
            start.ArgumentList.Add(a);
        using var mpirun = Process.Start(start)!;
        var output = new System.Text.StringBuilder();
        mpirun.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        mpirun.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        mpirun.BeginOutputReadLine();
        mpirun.BeginErrorReadLine();
        try
        {
            var deadline = Stopwatch.StartNew();
            while (!MpiRuns.Captured(output).Contains("Ep 1 (Step 000004)"))
            {
                Assert.False(mpirun.HasExited, "mpirun ended before training: " + MpiRuns.Captured(output));
                Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(120), "no evaluation within 120 s: " + MpiRuns.Captured(output));
                Thread.Sleep(100);
            }
            int rank1 = MpiRuns.RankProcess(mpirun.Id, rank: 1);
            var killed = Stopwatch.StartNew();
            Process.GetProcessById(rank1).Kill();
            Assert.True(mpirun.WaitForExit(TimeSpan.FromSeconds(60)), "the other rank did not stop within 60 s of the kill");
            mpirun.WaitForExit();
            Assert.NotEqual(0, mpirun.ExitCode);
            Assert.Contains("rank 1", MpiRuns.Captured(output));
            Assert.True(killed.Elapsed < TimeSpan.FromSeconds(60));
        }
        finally
        {
            if (!mpirun.HasExited) mpirun.Kill(entireProcessTree: true);
        }
        Assert.Equal(before, SHA256.HashData(File.ReadAllBytes(checkpoint)));
        Assert.Equal(checkpoint, TrainingCheckpoint.Latest(dir));
        Assert.Equal(1, TrainingCheckpoint.ReadContents(checkpoint).State.GlobalStep);
    }
}

/// <summary>A diverged loss on one rank, root or not, under mpirun.</summary>
public sealed class MpiDivergenceTests : MpiRunDirectory
{
    [SkippableTheory]
    [InlineData(1)]
    [InlineData(0)]
    public void ANonFiniteLossOnAnyRankStopsTheJobAndTheCheckpointSurvives(int faultyRank)
    {
        SystemTools.SkipUnlessInstalled("mpirun", SystemTools.MpiInstall);
        string dir = Path.Combine(Dir, "run");
        MpiRuns.Cli(processes: 1, [.. MpiRuns.Tiny, "--grad-accum", "2", "--max-steps", "2", "--out", dir]);
        string checkpoint = TrainingCheckpoint.Latest(dir)!;
        byte[] before = SHA256.HashData(File.ReadAllBytes(checkpoint));

        // Resumed on two ranks (MPMD launch): only the faulty rank's loss turns NaN, at the first step after the checkpoint.
        string cli = MpiRuns.CliPath();
        string[] train = ["dotnet", cli, "train", "--resume", dir, "--max-steps", "100000"];
        string[] faulty = ["env", "GPTSHARP_FAULT_NAN_LOSS_AT_STEP=3", .. train];
        var clock = Stopwatch.StartNew();
        var run = MpiRuns.Run("mpirun", [.. MpiRuns.MpirunOptions, "-np", "1", .. faultyRank == 0 ? faulty : train, ":", "-np", "1", .. faultyRank == 1 ? faulty : train],
            TimeSpan.FromSeconds(180));
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains($"rank {faultyRank} of 2", run.Output);
        Assert.Contains("The training loss became NaN", run.Output);
        Assert.Contains("step 3", run.Output);
        Assert.DoesNotContain("Step 000004", run.Output); // nobody trained past the diverged step
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(170), $"the job took {clock.Elapsed.TotalSeconds:F0} s to stop");
        // The last good checkpoint is untouched and still the newest.
        Assert.Equal(before, SHA256.HashData(File.ReadAllBytes(checkpoint)));
        Assert.Equal(checkpoint, TrainingCheckpoint.Latest(dir));
    }
}

public sealed class MpiTwoMachineTests : MpiRunDirectory
{
    /// <summary>
    /// Two "machines": two network namespaces joined by a veth pair, one rank in each, launched by mpirun's ssh
    /// launcher through an agent that enters the other namespace (<c>ip netns exec</c>) and talking over TCP only.
    /// </summary>
    [SkippableFact]
    public void TwoMachinesOverTcpEqualGradAccumTwo()
    {
        SystemTools.SkipUnlessInstalled("mpirun", SystemTools.MpiInstall);
        string ip = SystemTools.SkipUnlessInstalled("ip", "apt-get install iproute2");
        string id = (Environment.ProcessId % 100000).ToString(), nsA = $"gsmpi{id}a", nsB = $"gsmpi{id}b";
        int subnet = 100 + Environment.ProcessId % 150;
        string hostA = $"10.231.{subnet}.1", hostB = $"10.231.{subnet}.2";
        Skip.If(MpiRuns.Run(ip, ["netns", "add", nsA], TimeSpan.FromSeconds(10)).ExitCode != 0, "skipped: creating a network namespace needs root (CAP_SYS_ADMIN)");
        try
        {
            foreach (string[] command in (string[][])[
                ["netns", "add", nsB],
                ["link", "add", nsA, "type", "veth", "peer", "name", nsB],
                ["link", "set", nsA, "netns", nsA], ["link", "set", nsB, "netns", nsB],
                ["-n", nsA, "addr", "add", hostA + "/24", "dev", nsA], ["-n", nsB, "addr", "add", hostB + "/24", "dev", nsB],
                ["-n", nsA, "link", "set", nsA, "up"], ["-n", nsB, "link", "set", nsB, "up"],
                ["-n", nsA, "link", "set", "lo", "up"], ["-n", nsB, "link", "set", "lo", "up"]])
            {
                var step = MpiRuns.Run(ip, command, TimeSpan.FromSeconds(10));
                Skip.If(step.ExitCode != 0, $"skipped: `ip {string.Join(' ', command)}` failed ({step.Output.Trim()})");
            }
            string agent = Path.Combine(Dir, "netns-agent.sh"), hosts = Path.Combine(Dir, "hosts");
            File.WriteAllText(agent, $"#!/bin/sh\nhost=$1; shift\ncase \"$host\" in {hostA}) ns={nsA};; {hostB}) ns={nsB};; *) exit 1;; esac\nexec {ip} netns exec \"$ns\" /bin/sh -c \"$*\"\n");
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(agent, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.WriteAllText(hosts, $"{hostA} slots=1\n{hostB} slots=1\n");
            string single = Path.Combine(Dir, "single"), machines = Path.Combine(Dir, "machines");
            var one = MpiRuns.Cli(processes: 1, [.. MpiRuns.Tiny, "--grad-accum", "2", "--max-steps", "4", "--out", single]);
            string subnetMask = $"10.231.{subnet}.0/24";
            var two = MpiRuns.Run(ip, ["netns", "exec", nsA, "mpirun", "--allow-run-as-root", "--hostfile", hosts, "-np", "2", "--mca", "plm_rsh_agent", agent,
                "--mca", "btl", "self,tcp", "--mca", "oob_tcp_if_include", subnetMask, "--mca", "btl_tcp_if_include", subnetMask,
                "dotnet", MpiRuns.CliPath(), .. MpiRuns.Tiny, "--max-steps", "4", "--out", machines], TimeSpan.FromSeconds(180));
            Assert.True(two.ExitCode == 0, two.Output);
            Assert.Equal(MpiRuns.BookLines(one.Output), MpiRuns.BookLines(two.Output));
            MpiRuns.AssertSameWeights(single, machines);
        }
        finally
        {
            MpiRuns.Run(ip, ["netns", "del", nsA], TimeSpan.FromSeconds(10)); // deleting a namespace deletes its end of the veth pair, and so the pair
            MpiRuns.Run(ip, ["netns", "del", nsB], TimeSpan.FromSeconds(10));
        }
    }
}

/// <summary>A temporary folder for a test's runs, deleted after it.</summary>
public abstract class MpiRunDirectory : IDisposable
{
    protected string Dir { get; } = Path.Combine(Path.GetTempPath(), "gptsharp-mpi-" + Guid.NewGuid().ToString("N"));

    protected MpiRunDirectory() => Directory.CreateDirectory(Dir);

    public void Dispose() => Directory.Delete(Dir, recursive: true);
}

/// <summary>Running the CLI as one process or under mpirun, and comparing runs.</summary>
internal static class MpiRuns
{
    // A tiny model on the bundled The Verdict: 144 batches of 1 x 32, an evaluation every 2 steps.
    public static readonly string[] Tiny =
    [
        "train", "--emb-dim", "32", "--layers", "2", "--heads", "2", "--context-length", "32", "--drop-rate", "0",
        "--batch-size", "1", "--epochs", "1", "--eval-freq", "2", "--eval-iter", "3", "--threads", "1",
    ];

    public static readonly string[] MpirunOptions = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader,tcp"];

    public static string Captured(System.Text.StringBuilder output)
    {
        lock (output) return output.ToString();
    }

    /// <summary>The child of <paramref name="mpirun"/> that Open MPI made rank <paramref name="rank"/> (from its environment).</summary>
    public static int RankProcess(int mpirun, int rank)
    {
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int parent = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                if (parent != mpirun) continue;
                if (File.ReadAllText(Path.Combine(dir, "environ")).Split('\0').Contains($"OMPI_COMM_WORLD_RANK={rank}")) return pid;
            }
            catch (IOException) { } // the process ended meanwhile
        }
        throw new InvalidOperationException($"No rank {rank} under mpirun {mpirun}.");
    }

    public static string LossColumns(string csvLine) => string.Join(',', csvLine.Split(',').Take(5));

    /// <summary>What the run prints that must agree: the initial losses and the book's evaluation lines.</summary>
    public static List<string> BookLines(string output) => output.Split('\n').Select(l => l.TrimEnd('\r'))
        .Where(l => l.StartsWith("Ep ", StringComparison.Ordinal) || l.StartsWith("Training loss", StringComparison.Ordinal) || l.StartsWith("Validation loss", StringComparison.Ordinal))
        .ToList();

    /// <summary>The two runs' final weights agree to 1e-6 relative (in L2 norm over each tensor).</summary>
    public static void AssertSameWeights(string runA, string runB)
    {
        using var a = ModelFile.Load(Path.Combine(runA, RunDirectory.ModelFile));
        using var b = ModelFile.Load(Path.Combine(runB, RunDirectory.ModelFile));
        var pa = a.Parameters();
        var pb = b.Parameters();
        Assert.Equal(pa.Count, pb.Count);
        for (int i = 0; i < pa.Count; i++) AssertClose(pa[i].Value.Span, pb[i].Value.Span, pa[i].Name);
    }

    /// <summary>The two runs' latest checkpoints hold the same AdamW moments, to 1e-6 relative per tensor.</summary>
    public static void AssertSameMoments(string runA, string runB)
    {
        using var a = TrainingCheckpoint.Load(runA);
        using var b = TrainingCheckpoint.Load(runB);
        Assert.Equal(a.Optimizer.StepCount, b.Optimizer.StepCount);
        for (int i = 0; i < a.Optimizer.ExpAvg.Length; i++)
        {
            AssertClose(a.Optimizer.ExpAvg[i].Span, b.Optimizer.ExpAvg[i].Span, $"exp_avg of {a.Optimizer.Parameters[i].Name}");
            AssertClose(a.Optimizer.ExpAvgSq[i].Span, b.Optimizer.ExpAvgSq[i].Span, $"exp_avg_sq of {a.Optimizer.Parameters[i].Name}");
        }
    }

    private static void AssertClose(ReadOnlySpan<float> x, ReadOnlySpan<float> y, string name)
    {
        Assert.Equal(x.Length, y.Length);
        double difference = 0, norm = 0;
        for (int j = 0; j < x.Length; j++)
        {
            difference += (double)(x[j] - y[j]) * (x[j] - y[j]);
            norm += (double)y[j] * y[j];
        }
        double relative = Math.Sqrt(difference / Math.Max(norm, 1e-30));
        Assert.True(relative <= 1e-6, $"{name}: relative difference {relative:G3}");
    }

    public static string CliPath() => Path.Combine(AppContext.BaseDirectory, "GptSharp.Cli.dll");

    /// <summary>Runs the CLI as one process or under <c>mpirun -np N</c>; fails the test on a non-zero exit.</summary>
    public static (int ExitCode, string Output) Cli(int processes, string[] args)
    {
        var run = processes == 1
            ? Run("dotnet", [CliPath(), .. args], TimeSpan.FromSeconds(180))
            : Run("mpirun", [.. MpirunOptions, "-np", processes.ToString(), "dotnet", CliPath(), .. args], TimeSpan.FromSeconds(180));
        Assert.True(run.ExitCode == 0, $"exit {run.ExitCode}: {run.Output}");
        return run;
    }

    public static (int ExitCode, string Output) Run(string program, string[] args, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (string a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{program} did not finish within {timeout.TotalSeconds} s: {stdout.Result}{stderr.Result}");
        }
        process.WaitForExit();
        return (process.ExitCode, stdout.Result + stderr.Result);
    }
}
