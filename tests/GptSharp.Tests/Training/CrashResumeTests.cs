using System.Diagnostics;
using GptSharp.Data;
using GptSharp.Training;
using Xunit.Abstractions;

namespace GptSharp.Tests.Training;

/// <summary>
/// <c>gptsharp train</c> killed with SIGKILL at random moments, some of them in the middle of a checkpoint write, and
/// resumed after each kill: the run always resumes, and its final weights are bit-identical to an uninterrupted run's.
/// </summary>
public sealed class CrashResumeTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-crash-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private const int Kills = 10;

    [Fact]
    public void KilledRunsResumeToTheUninterruptedRunsWeights()
    {
        Directory.CreateDirectory(_dir);
        string corpus = Path.Combine(_dir, "corpus.txt");
        File.WriteAllText(corpus, TextCorpus.TheVerdict()[..2500]);
        string[] settings =
        [
            "--data", corpus, "--context-length", "12", "--emb-dim", "8", "--layers", "1", "--heads", "2", "--epochs", "2",
            "--eval-freq", "4", "--eval-iter", "1", "--save-every", "2", "--keep-last", "2", "--threads", "1",
        ];

        string reference = Path.Combine(_dir, "reference");
        var (code, log) = RunToEnd(["train", .. settings, "--out", reference]);
        Assert.True(code == 0, log);

        string crashed = Path.Combine(_dir, "crashed");
        var random = new Random(12345);
        int killed = 0, midWrite = 0, attempts = 0;
        while (killed < Kills)
        {
            Assert.True(++attempts < 4 * Kills, $"only {killed} kills in {attempts} attempts");
            // Resume whenever there is a checkpoint; before the first one the run starts again.
            string[] args = TrainingCheckpoint.Latest(crashed) is null ? ["train", .. settings, "--out", crashed] : ["train", "--resume", crashed, .. settings[^6..]];
            using var process = Start(args);
            bool aimAtWrite = killed % 2 == 0;
            var clock = Stopwatch.StartNew();
            double delay = 0.2 + random.NextDouble() * 1.2;
            bool inWrite = false;
            while (!process.HasExited)
            {
                inWrite = Directory.Exists(crashed) && Directory.EnumerateFiles(crashed, ".checkpoint-*.tmp").Any();
                if (aimAtWrite ? inWrite : clock.Elapsed.TotalSeconds >= delay) break;
                Thread.Sleep(aimAtWrite ? 1 : 10);
            }
            if (process.HasExited)
            {
                // The run finished before this kill: start it over from scratch to use the remaining kills.
                Assert.True(process.ExitCode == 0, process.StandardError.ReadToEnd());
                Directory.Delete(crashed, recursive: true);
                continue;
            }
            process.Kill(); // SIGKILL
            process.WaitForExit();
            // The killed process's directory lock went with it: the dashboard sees the run stopped, and it resumes.
            if (Directory.Exists(crashed)) Assert.False(new RunDirectory(crashed).IsTrainingNow);
            killed++;
            if (inWrite) midWrite++;
        }
        output.WriteLine($"{killed} kills ({midWrite} during a checkpoint write) in {attempts} attempts");
        Assert.True(midWrite >= 3, $"only {midWrite} kills landed in a checkpoint write");

        (code, log) = RunToEnd(TrainingCheckpoint.Latest(crashed) is null
            ? ["train", .. settings, "--out", crashed]
            : ["train", "--resume", crashed, .. settings[^6..]]);
        Assert.True(code == 0, log);
        Assert.Equal(File.ReadAllBytes(Path.Combine(reference, RunDirectory.ModelFile)), File.ReadAllBytes(Path.Combine(crashed, RunDirectory.ModelFile)));
        Assert.Equal(File.ReadAllLines(Path.Combine(reference, RunDirectory.MetricsFile)).Select(WithoutThroughput),
            File.ReadAllLines(Path.Combine(crashed, RunDirectory.MetricsFile)).Select(WithoutThroughput));
    }

    /// <summary>A metrics line without its tokens/s column, which depends on the machine's speed.</summary>
    private static string WithoutThroughput(string line) => line[..line.LastIndexOf(',')];

    private static Process Start(string[] args)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(typeof(GptSharp.Cli.Program).Assembly.Location);
        foreach (var a in args) info.ArgumentList.Add(a);
        var process = Process.Start(info)!;
        // Drain the pipes so a chatty child never blocks on a full pipe.
        process.OutputDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        return process;
    }

    private static (int Code, string Log) RunToEnd(string[] args)
    {
        using var process = Start(args);
        string errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, $"gptsharp {string.Join(' ', args)}: {errors}");
    }
}
