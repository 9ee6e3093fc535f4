using GptSharp.Checkpoints.Gpt2Download;

namespace GptSharp.Tests.Checkpoints.TensorFlow;

/// <summary>Sets GPTSHARP_HOME (process-wide), so these tests do not run in parallel with others that read it.</summary>
[CollectionDefinition(nameof(GptSharpHomeCollection), DisableParallelization = true)]
public sealed class GptSharpHomeCollection;

[Collection(nameof(GptSharpHomeCollection))]
public class DownloadCommandTests
{
    [Fact]
    public void CliDownloadsFromTheBaseUrlIntoTheCacheAndReportsErrorsWithExitCode1()
    {
        string home = Path.Combine(Path.GetTempPath(), "gptsharp-home-" + Guid.NewGuid().ToString("N"));
        string? previous = Environment.GetEnvironmentVariable(Gpt2Models.HomeVariable);
        using var server = new LocalHttpServer();
        try
        {
            Environment.SetEnvironmentVariable(Gpt2Models.HomeVariable, home);
            var root = GptSharp.Cli.Program.BuildRootCommand();
            Assert.Equal(1, root.Parse(["download", "gpt3"]).Invoke());
            Assert.Equal(1, root.Parse(["download"]).Invoke());

            // The server has only `checkpoint` (right size): it is fetched, then encoder.json is a 404.
            server.Files["/m/124M/checkpoint"] = new byte[77];
            Assert.Equal(1, root.Parse(["download", "gpt2-small", "--base-url", server.BaseUrl + "m"]).Invoke());
            string dir = Path.Combine(home, "gpt2", "124M");
            Assert.Equal(Gpt2Models.CacheDirectory(Gpt2Models.Find("124M")), dir);
            Assert.Equal(77, new FileInfo(Path.Combine(dir, "checkpoint")).Length);
            Assert.Contains(server.Requests, r => r.Path == "/m/124M/encoder.json");
            Assert.False(File.Exists(Path.Combine(dir, "encoder.json")));
        }
        finally
        {
            Environment.SetEnvironmentVariable(Gpt2Models.HomeVariable, previous);
            if (Directory.Exists(home)) Directory.Delete(home, true);
        }
    }
}
