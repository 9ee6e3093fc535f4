using GptSharp.Checkpoints;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;
using GptSharp.Randomness;

namespace GptSharp.Tests.Training;

public sealed class BestModelWriterTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-best-" + Guid.NewGuid().ToString("N"));

    public BestModelWriterTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly GptConfig Tiny = GptConfig.Book124M with { ContextLength = 8, EmbeddingDim = 16, Heads = 2, Layers = 1 };

    private static float[] Weights(GptModel model) => model.Parameters().SelectMany(p => p.Value.ToArray()).ToArray();

    private static void Perturb(GptModel model, float by)
    {
        foreach (var p in model.Parameters())
        {
            var span = p.Value.Span;
            for (int i = 0; i < span.Length; i++) span[i] += by;
        }
    }

    [Fact]
    public void TheFileHoldsTheNewestOfferedWeightsNotTheModelAsItIsLater()
    {
        using var model = new GptModel(Tiny, new TorchGenerator(1));
        string path = Path.Combine(_dir, "best.safetensors");
        float[] newest;
        using (var writer = new BestModelWriter(path, model))
        {
            // Offers while a write may still be going: the one in between may be skipped, the newest never is.
            writer.Offer();
            Perturb(model, 0.25f);
            writer.Offer();
            Perturb(model, 0.5f);
            writer.Offer();
            newest = Weights(model);
            Perturb(model, 1f); // training goes on after the evaluation: the file must not follow the model
            writer.Flush();
        }
        using var best = GptModel.Load(path);
        Assert.Equal(Tiny, best.Config);
        Assert.Equal(newest, Weights(best));
    }

    [Fact]
    public void AFailedWriteIsReportedAtFlushNamingTheFile()
    {
        using var model = new GptModel(Tiny, new TorchGenerator(1));
        string path = Path.Combine(_dir, "missing-directory", "best.safetensors");
        using var writer = new BestModelWriter(path, model);
        writer.Offer();
        var e = Assert.Throws<IOException>(writer.Flush);
        Assert.Contains("best.safetensors", e.Message, StringComparison.Ordinal);
        writer.Flush(); // reported once
    }
}
