using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.IO;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;
using GptSharp.Randomness;

namespace GptSharp.Tests.Checkpoints;

public class TrainingCheckpointTests
{
    private static AdamW SteppedOptimizer(GptModel model, int steps)
    {
        var optimizer = new AdamW(model.Parameters(), 3e-4f, 0.05f, 0.8f, 0.99f, 1e-7f);
        var rng = new FastRandom(11);
        for (int s = 0; s < steps; s++)
        {
            foreach (var p in model.Parameters()) rng.Normal(p.Grad.Span, 0, 0.01);
            optimizer.Step();
        }
        optimizer.LearningRate = 1.2345e-4f; // as a schedule would have set it
        return optimizer;
    }

    [Fact]
    public void RoundTripRestoresWeightsMomentsStepLearningRateAndTrainerState()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny with { QkvBias = true });
        using var optimizer = SteppedOptimizer(model, 3);
        string state = """{"epoch":1,"global_step":3,"rng":"AAEC","losses":[1.5,2.25]}""";
        TrainingCheckpointFile.Save(dir.File(TrainingCheckpointFile.FileNameFor(1)), model, optimizer, state);

        // A run directory resolves to its checkpoint file.
        var (m2, o2, s2) = TrainingCheckpointFile.Load(dir.Path);
        using (m2)
        using (o2)
        {
            Assert.Equal(state, s2[TrainingCheckpointFile.TrainerStateKey]);
            Assert.Equal(model.Config, m2.Config);
            AssertSameParameters(model, m2);
            Assert.Equal(3, o2.StepCount);
            Assert.Equal(1.2345e-4f, o2.LearningRate);
            Assert.Equal((0.05f, 0.8f, 0.99f, 1e-7f), (o2.WeightDecay, o2.Beta1, o2.Beta2, o2.Eps));
            for (int i = 0; i < model.Parameters().Count; i++)
            {
                Assert.True(optimizer.ExpAvg[i].Span.SequenceEqual(o2.ExpAvg[i].Span));
                Assert.True(optimizer.ExpAvgSq[i].Span.SequenceEqual(o2.ExpAvgSq[i].Span));
            }
        }

        // Load into an existing model/optimizer (what a resumed run does).
        using var target = new GptModel(model.Config);
        using var targetOptimizer = new AdamW(target.Parameters(), 1f, 0.05f, 0.8f, 0.99f, 1e-7f);
        Assert.Equal(state, TrainingCheckpointFile.LoadInto(dir.Path, target, targetOptimizer));
        AssertSameParameters(model, target);
        Assert.Equal(3, targetOptimizer.StepCount);
        Assert.Equal(1.2345e-4f, targetOptimizer.LearningRate);
        Assert.True(optimizer.ExpAvgSq[5].Span.SequenceEqual(targetOptimizer.ExpAvgSq[5].Span));
    }

    [Fact]
    public void ResumedStepEqualsUninterruptedStep()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny);
        using var optimizer = SteppedOptimizer(model, 2);
        TrainingCheckpointFile.Save(dir.File("c.safetensors"), model, optimizer, "{}");
        var (resumed, resumedOptimizer, _) = TrainingCheckpointFile.Load(dir.File("c.safetensors"));
        using (resumed)
        using (resumedOptimizer)
        {
            foreach (var m in new[] { model, resumed })
            {
                var rng = new FastRandom(99);
                foreach (var p in m.Parameters()) rng.Normal(p.Grad.Span, 0, 0.02);
            }
            optimizer.Step();
            resumedOptimizer.Step();
            AssertSameParameters(model, resumed);
        }
    }

    [Fact]
    public void MismatchedOptimizerOrConfigIsRefused()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny);
        using var optimizer = SteppedOptimizer(model, 1);
        string path = dir.File("c.safetensors");
        TrainingCheckpointFile.Save(path, model, optimizer, "{}");
        using var other = new GptModel(Tiny);
        using var wrongBetas = new AdamW(other.Parameters(), 3e-4f, 0.05f);
        Assert.Contains("differs from this optimizer's", Assert.Throws<InvalidDataException>(() => TrainingCheckpointFile.LoadInto(path, other, wrongBetas)).Message);
        using var bigger = new GptModel(Tiny with { Layers = 3 });
        using var biggerOptimizer = new AdamW(bigger.Parameters(), 3e-4f, 0.05f, 0.8f, 0.99f, 1e-7f);
        Assert.Contains("config", Assert.Throws<InvalidDataException>(() => TrainingCheckpointFile.LoadInto(path, bigger, biggerOptimizer)).Message);
        Assert.Throws<ArgumentException>(() => TrainingCheckpointFile.Save(path, model, optimizer, "{not json"));
        // A model file is not a training checkpoint.
        model.Save(dir.File("model.safetensors"));
        Assert.Contains("not a GptSharp training checkpoint", Assert.Throws<InvalidDataException>(() => TrainingCheckpointFile.Load(dir.File("model.safetensors"))).Message);
    }

    [Fact]
    public void FailedCheckpointWriteLeavesThePreviousOne()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny);
        using var optimizer = SteppedOptimizer(model, 1);
        string path = dir.File(TrainingCheckpointFile.FileNameFor(1));
        TrainingCheckpointFile.Save(path, model, optimizer, """{"step":1}""");
        optimizer.Step();
        AtomicFile.WrapStreamForTests.Value = s => new FailingStream(s, 20_000);
        try
        {
            Assert.Throws<IOException>(() => TrainingCheckpointFile.Save(path, model, optimizer, """{"step":2}"""));
        }
        finally
        {
            AtomicFile.WrapStreamForTests.Value = null;
        }
        var (m, o, state) = TrainingCheckpointFile.Load(path);
        using (m)
        using (o)
        {
            Assert.Equal("""{"step":1}""", state[TrainingCheckpointFile.TrainerStateKey]);
            Assert.Equal(1, o.StepCount);
        }
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void ReadsTheTrainingLoopsCheckpointLayout()
    {
        // The metadata GptSharp.Training.TrainingCheckpoint adds: its run config, trainer state and RNG beside the format's own.
        using var dir = new TempDir();
        using var model = RandomModel(Tiny);
        using var optimizer = SteppedOptimizer(model, 2);
        var parameters = model.Parameters();
        var entries = parameters.Select(p => SafeTensorsEntry.Float32(p.Name, p.Value)).ToList();
        for (int i = 0; i < parameters.Count; i++)
        {
            entries.Add(SafeTensorsEntry.Float32(TrainingCheckpointFile.ExpAvgPrefix + parameters[i].Name, optimizer.ExpAvg[i]));
            entries.Add(SafeTensorsEntry.Float32(TrainingCheckpointFile.ExpAvgSqPrefix + parameters[i].Name, optimizer.ExpAvgSq[i]));
        }
        string trainerState = """{"epoch":0,"global_step":1,"tokens_seen":512}""";
        SafeTensorsWriter.Write(dir.File(TrainingCheckpointFile.FileNameFor(1)), entries, new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["gptsharp"] = "training",
            ["config"] = model.Config.ToJson(),
            ["run_config"] = """{"model":{},"training":{}}""",
            ["trainer_state"] = trainerState,
            ["optimizer"] = """{"step":2,"learning_rate":0.00012345,"weight_decay":0.05,"beta1":0.8,"beta2":0.99,"eps":1E-07}""",
            ["rng_kind"] = "fast",
            ["rng_state"] = "AAAA",
        });
        using var loaded = ModelStore.Open(dir.Path);
        Assert.Equal("training checkpoint", loaded.Format);
        Assert.Equal(trainerState, loaded.TrainerStateJson);
        AssertSameParameters(model, loaded.Model);
        Assert.Equal((2L, 1.2345e-4f, 0.05f, 0.8f, 0.99f, 1e-7f),
            (loaded.Optimizer!.StepCount, loaded.Optimizer.LearningRate, loaded.Optimizer.WeightDecay, loaded.Optimizer.Beta1, loaded.Optimizer.Beta2, loaded.Optimizer.Eps));
        Assert.True(optimizer.ExpAvg[3].Span.SequenceEqual(loaded.Optimizer.ExpAvg[3].Span));
    }
}
