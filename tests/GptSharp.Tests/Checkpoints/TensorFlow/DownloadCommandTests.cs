
using GptSharp.Pretrained;
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

public class Gpt2CacheTests
{
    [Fact]
    public void SizeNamesResolveToTheCacheOrSayHowToGetTheFiles()
    {
        string home = Path.Combine(Path.GetTempPath(), "gptsharp-home-" + Guid.NewGuid().ToString("N"));
        try
        {
            Assert.Null(Gpt2Models.TryResolveCached("not-a-size", home));
            Assert.Null(Gpt2Models.TryResolveCached(Path.GetTempPath(), home)); // an existing path is not a name

            var ex = Assert.Throws<FileNotFoundException>(() => Gpt2Models.TryResolveCached("gpt2-medium", home));
            Assert.Contains("GPT-2 gpt2-medium (355M) is not downloaded", ex.Message);
            Assert.Contains("gptsharp download gpt2-medium", ex.Message);
            Assert.Contains("a folder holding OpenAI's files", ex.Message);
            Assert.Contains(Path.Combine(home, "gpt2", "355M"), ex.Message);

            string dir = Path.Combine(home, "gpt2", "124M");
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "model.ckpt.data-00000-of-00001.part"), "x");
            ex = Assert.Throws<FileNotFoundException>(() => Gpt2Models.TryResolveCached("124M", home));
            Assert.Contains("only partly downloaded", ex.Message);
            Assert.Contains("to resume", ex.Message);

            // Files placed by hand: a loadable checkpoint folder.
            using var source = new GptSharp.Model.GptModel(new GptSharp.Model.GptConfig { VocabSize = 20, ContextLength = 4, EmbeddingDim = 4, Heads = 1, Layers = 1, QkvBias = true }, new GptSharp.Randomness.FastRandom(2));
            string written = Gpt2TensorFlowImportTests.WriteOpenAiCheckpoint(source, 262144, false);
            foreach (string f in Directory.GetFiles(written)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            Directory.Delete(written, true);
            Assert.Equal(dir, Gpt2Models.TryResolveCached("gpt2-small", home));
            using var model = GptSharp.Checkpoints.Gpt2.Gpt2TensorFlowImport.Load(dir);
            Assert.Equal(source.TokenEmbedding.Value.ToArray(), model.OutHead.Value.ToArray());
        }
        finally
        {
            if (Directory.Exists(home)) Directory.Delete(home, true);
        }
    }
}
