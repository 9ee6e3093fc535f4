using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Checkpoints;
using GptSharp.Pretrained;
using GptSharp.Randomness;

namespace GptSharp.Tests.Checkpoints.TensorFlow;

[Collection(nameof(GptSharpHomeCollection))]
public class ModelStoreTensorFlowTests
{
    private static readonly GptConfig Tiny = new() { VocabSize = 30, ContextLength = 6, EmbeddingDim = 8, Heads = 2, Layers = 2, QkvBias = true };

    [Fact]
    public void ModelStoreLoadsOpenAiFoldersAndGpt2SizeNamesFromTheCache()
    {
        string home = Path.Combine(Path.GetTempPath(), "gptsharp-home-" + Guid.NewGuid().ToString("N"));
        string? previous = Environment.GetEnvironmentVariable(Gpt2Models.HomeVariable);
        using var source = new GptModel(Tiny, new FastRandom(4));
        source.OutHead.Value.CopyFrom(source.TokenEmbedding.Value);
        string folder = Gpt2TensorFlowImportTests.WriteOpenAiCheckpoint(source, 262144, false);
        try
        {
            using (var loaded = ModelStore.Open(folder))
            {
                Assert.Equal("TensorFlow checkpoint (OpenAI GPT-2)", loaded.Format);
                Assert.Null(loaded.Optimizer);
                Gpt2TensorFlowImportTests.AssertSameWeights(source, loaded.Model);
            }
            using (var withDropout = GptModel.Load(folder, new LoadOptions { Config = Tiny with { DropRate = 0f } }))
                Assert.Equal(0f, withDropout.Config.DropRate);

            Environment.SetEnvironmentVariable(Gpt2Models.HomeVariable, home);
            var ex = Assert.Throws<FileNotFoundException>(() => GptModel.Load("gpt2-small"));
            Assert.Contains("gptsharp download gpt2-small", ex.Message);

            string cache = Path.Combine(home, "gpt2", "124M");
            Directory.CreateDirectory(Path.GetDirectoryName(cache)!);
            Directory.Move(folder, cache); // "copied by hand" into the cache
            using (var fromCache = GptModel.Load("gpt2-small"))
                Gpt2TensorFlowImportTests.AssertSameWeights(source, fromCache);
            using (var byAlias = GptModel.Load("124M"))
                Gpt2TensorFlowImportTests.AssertSameWeights(source, byAlias);
        }
        finally
        {
            Environment.SetEnvironmentVariable(Gpt2Models.HomeVariable, previous);
            if (Directory.Exists(folder)) Directory.Delete(folder, true);
            if (Directory.Exists(home)) Directory.Delete(home, true);
        }
    }
}
