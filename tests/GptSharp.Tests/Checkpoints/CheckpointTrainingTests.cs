using System.Numerics.Tensors;
using System.Text.Json;
using GptSharp.Model;
using GptSharp.Tensors;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Formats.SafeTensors;
using GptSharp.Randomness;
using GptSharp.Data;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Tests.Checkpoints;

/// <summary>Loaded checkpoints run forward and train like the PyTorch originals (needs the model's forward/backward).</summary>
/// <remarks>In the Workers collection: these keep the worker pool busy, which would starve WorkersTests' thread-count checks.</remarks>
[Collection(nameof(GptSharp.Tests.Tensors.WorkersTests))]
public class CheckpointTrainingTests
{
    private static readonly JsonElement Expected = JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("pth", "expected.json"))).RootElement;

    private static GptConfig PthConfig(bool qkvBias) => new()
    {
        VocabSize = 64, ContextLength = 16, EmbeddingDim = 32, Heads = 4, Layers = 2, DropRate = 0f, QkvBias = qkvBias,
    };

    private static void AssertForwardCheck(GptModel model, JsonElement check)
    {
        model.Eval();
        var ids = check.GetProperty("input_ids")[0].EnumerateArray().Select(x => x.GetInt32()).ToArray();
        using var _ = model.NoGrad();
        var logits = model.Forward(TokenBatch.FromSequence(ids));
        var last = logits.Span.Slice((ids.Length - 1) * model.Config.VocabSize, model.Config.VocabSize);
        var expected = check.GetProperty("logits_last_token_first8").EnumerateArray().Select(x => (float)x.GetDouble()).ToArray();
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(last[i] - expected[i]) <= 1e-4f, $"logit {i}: {last[i]} vs {expected[i]}");
        Assert.Equal(check.GetProperty("argmax_last_token").GetInt32(), TensorPrimitives.IndexOfMax(last));
    }

    [Theory]
    [InlineData("model.pth", false)]
    [InlineData("model_qkv_bias.pth", true)]
    public void PthModelsGiveTheRecordedLogits(string file, bool qkvBias)
    {
        using var model = PthModelFile.LoadModel(FixturePaths.Get("pth", file), PthConfig(qkvBias));
        AssertForwardCheck(model, Expected.GetProperty("files").GetProperty(file).GetProperty("forward_check"));
    }

    [Fact]
    public void HuggingFaceFixtureGivesTheTiedLogits()
    {
        using var model = Gpt2Import.LoadHuggingFace(FixturePaths.Get("pth", "tiny_gpt2_hf.safetensors"), PthConfig(true));
        AssertForwardCheck(model, Expected.GetProperty("files").GetProperty("tiny_gpt2_hf.safetensors").GetProperty("forward_check_tied"));
    }

    [Fact]
    public void HuggingFaceTwinReproducesTheReferenceLogits()
    {
        using var model = GptModel.Load(FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors"));
        using var io = SafeTensorsFile.Open(FixturePaths.Get("reference", "tiny-qkvbias-hf", "io.safetensors"));
        var (inputs, _) = Batch(io);
        model.Eval();
        using var _ = model.NoGrad();
        var logits = model.Forward(inputs);
        var expected = io.ReadFloats("logits");
        float worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - logits.Span[i]));
        Assert.True(worst <= 1e-4f, $"logits differ by {worst}");
    }

    private static (TokenBatch Inputs, TokenBatch Targets) Batch(SafeTensorsFile io)
    {
        var shape = io.Find("inputs")!.Shape;
        TokenBatch Read(string name) => new(io.ReadInt64(name).Select(x => checked((int)x)).ToArray(), shape[0], shape[1]);
        return (Read("inputs"), Read("targets"));
    }

    private static float TrainStep(GptModel model, AdamW optimizer, TokenBatch inputs, TokenBatch targets)
    {
        optimizer.ZeroGrad();
        var loss = Losses.CrossEntropy(model.Forward(inputs), targets);
        float value = loss.Value;
        loss.Backward();
        optimizer.Step();
        return value;
    }

    /// <summary>
    /// The reference fixture's weights go through a .pth file; one AdamW step; the model + optimizer are saved as the
    /// book's model_and_optimizer.pth, reloaded, then as a training checkpoint, reloaded; two more steps.
    /// The result equals PyTorch's parameters after 3 steps, and bit for bit the same 3 steps run without stopping.
    /// </summary>
    [Fact]
    public void TrainingThroughPthAndCheckpointResumesMatchesPyTorchAndTheUninterruptedRun()
    {
        using var dir = new TempDir();
        string fixture = FixturePaths.Get("reference", "tiny-qkvbias");
        using var io = SafeTensorsFile.Open(Path.Combine(fixture, "io.safetensors"));
        var (inputs, targets) = Batch(io);
        var expectedLosses = io.ReadFloats("losses_3steps");

        using var straight = ModelFile.Load(Path.Combine(fixture, "weights.safetensors"));
        straight.Train();
        using var straightOptimizer = new AdamW(straight.Parameters(), lr: 0.0004f, weightDecay: 0.1f);
        for (int s = 0; s < 3; s++) TrainStep(straight, straightOptimizer, inputs, targets);

        PthModelFile.SaveModel(straight, dir.File("unused.pth")); // writing never disturbs the model
        using (var book = ModelFile.Load(Path.Combine(fixture, "weights.safetensors")))
            PthModelFile.SaveModel(book, dir.File("model.pth"));

        var losses = new List<float>();
        using (var model = PthModelFile.LoadModel(dir.File("model.pth"), straight.Config))
        using (var optimizer = new AdamW(model.Parameters(), lr: 0.0004f, weightDecay: 0.1f))
        {
            model.Train();
            losses.Add(TrainStep(model, optimizer, inputs, targets));
            PthModelFile.Save(model, optimizer, dir.File("model_and_optimizer.pth"));
        }
        var (m2, o2) = PthModelFile.Load(dir.File("model_and_optimizer.pth"), straight.Config);
        using (m2)
        using (o2)
        {
            m2.Train();
            losses.Add(TrainStep(m2, o2!, inputs, targets));
            TrainingCheckpointFile.Save(dir.File(TrainingCheckpointFile.FileNameFor(1)), m2, o2!, """{"step":2}""");
        }
        var (m3, o3, state) = TrainingCheckpointFile.Load(dir.Path);
        using (m3)
        using (o3)
        {
            Assert.Equal("""{"step":2}""", state[TrainingCheckpointFile.TrainerStateKey]);
            m3.Train();
            losses.Add(TrainStep(m3, o3, inputs, targets));
            for (int s = 0; s < 3; s++) Assert.True(Math.Abs(losses[s] - expectedLosses[s]) <= 1e-5f, $"loss {s}: {losses[s]} vs {expectedLosses[s]}");
            AssertSameParameters(straight, m3);
            using var after = SafeTensorsFile.Open(Path.Combine(fixture, "after3steps.safetensors"));
            foreach (var p in m3.Parameters())
            {
                var expected = after.ReadFloats(p.Name);
                float diff = 0;
                for (int i = 0; i < expected.Length; i++) diff = Math.Max(diff, Math.Abs(expected[i] - p.Value.Span[i]));
                // W_key.bias has a zero true gradient: AdamW amplifies rounding noise there (see the fixture README).
                Assert.True(diff <= (p.Name.EndsWith("att.W_key.bias") ? 1.5e-3f : 1e-5f), $"{p.Name} after 3 steps differs by {diff}");
            }
        }
    }

    /// <summary>
    /// With dropout on, a resume is exact only if the trainer's state carries the RNG: here the dropout generator's
    /// state goes into the trainer-state JSON as base64 (what the training loop does with every generator).
    /// </summary>
    [Fact]
    public void ResumeWithDropoutIsBitIdenticalWhenTheTrainerStateCarriesTheRng()
    {
        using var dir = new TempDir();
        using var io = SafeTensorsFile.Open(FixturePaths.Get("reference", "tiny-qkvbias", "io.safetensors"));
        var (inputs, targets) = Batch(io);
        string configPath = FixturePaths.Get("reference", "tiny-qkvbias", "config.json");
        var config = GptConfig.FromFile(configPath) with { DropRate = 0.1f };

        GptModel Fresh()
        {
            var model = new GptModel(config, new FastRandom(5)) { DropoutGenerator = new FastRandom(77) };
            model.Train();
            return model;
        }

        using var straight = Fresh();
        using var straightOptimizer = new AdamW(straight.Parameters());
        var straightLosses = Enumerable.Range(0, 4).Select(_ => TrainStep(straight, straightOptimizer, inputs, targets)).ToList();

        var losses = new List<float>();
        using (var first = Fresh())
        using (var firstOptimizer = new AdamW(first.Parameters()))
        {
            for (int s = 0; s < 2; s++) losses.Add(TrainStep(first, firstOptimizer, inputs, targets));
            string state = JsonSerializer.Serialize(new { step = 2, dropout_rng = Convert.ToBase64String(first.DropoutGenerator.GetState()) });
            TrainingCheckpointFile.Save(dir.File(TrainingCheckpointFile.FileNameFor(1)), first, firstOptimizer, state);
        }
        using var resumed = new GptModel(config) { DropoutGenerator = new FastRandom(0) };
        using var resumedOptimizer = new AdamW(resumed.Parameters());
        string json = TrainingCheckpointFile.LoadInto(dir.Path, resumed, resumedOptimizer);
        resumed.DropoutGenerator.SetState(Convert.FromBase64String(JsonDocument.Parse(json).RootElement.GetProperty("dropout_rng").GetString()!));
        resumed.Train();
        for (int s = 0; s < 2; s++) losses.Add(TrainStep(resumed, resumedOptimizer, inputs, targets));

        Assert.Equal(straightLosses, losses);
        AssertSameParameters(straight, resumed);
        Assert.NotEqual(straightLosses[0], straightLosses[1]); // dropout masks differ per step: the RNG really moved
    }
}
