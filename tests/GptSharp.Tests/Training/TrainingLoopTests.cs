using GptSharp.Data;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Training;
using GptSharp.Randomness;

namespace GptSharp.Tests.Training;

public sealed class TrainingLoopTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-train-" + Guid.NewGuid().ToString("N"));

    public TrainingLoopTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The book's test configuration (ch05/01_main-chapter-code/tests.py).</summary>
    private static readonly GptConfig TinyConfig = GptConfig.Book124M with { ContextLength = 12, EmbeddingDim = 32, Heads = 4, Layers = 2, DropRate = 0.1f };

    private static readonly Lazy<(ITokenSequence Train, ITokenSequence Validation)> VerdictTokens = new(() =>
        DataLoaders.SplitAndEncode(TextCorpus.TheVerdict(), t => Gpt2Tokenizer.Instance.Encode(t, Gpt2Tokenizer.AllSpecialTokens)));

    private sealed record Run(GptModel Model, AdamW Optimizer, IRandomGenerator Generator, TrainValidationLoaders Loaders) : IDisposable
    {
        public void Dispose()
        {
            Optimizer.Dispose();
            Model.Dispose();
        }
    }

    /// <summary>Like gpt_train.py's main: seed, model, AdamW, loaders over the 90/10 character split.</summary>
    private static Run NewRun(GptConfig config, int batchSize = 2, float lr = 5e-4f, ITokenSequence? trainTokens = null)
    {
        var generator = new TorchGenerator(123);
        var model = new GptModel(config, generator);
        var optimizer = new AdamW(model.Parameters(), lr, 0.1f);
        var (train, validation) = VerdictTokens.Value;
        train = trainTokens ?? train;
        var loaders = DataLoaders.CreateTrainValidation(train, validation, batchSize, config.ContextLength, config.ContextLength, generator);
        return new Run(model, optimizer, generator, loaders);
    }

    [Fact]
    public void TheBooksTinyTrainingRunRecords39EvaluationsAndTheLossFalls()
    {
        using var run = NewRun(TinyConfig);
        var output = new StringWriter();
        var (trainLosses, valLosses, tokensSeen) = Pretraining.TrainModelSimple(run.Model, run.Loaders.Train, run.Loaders.Validation,
            run.Optimizer, numEpochs: 1, evalFreq: 5, evalIter: 1, startContext: "Every effort moves you", Gpt2Tokenizer.Instance, output);

        Assert.Equal(192, run.Loaders.Train.Count);
        Assert.Equal(39, trainLosses.Count);
        Assert.Equal(39, valLosses.Count);
        Assert.Equal(39, tokensSeen.Count);
        Assert.Equal(2 * 12, tokensSeen[0]);              // after the first step
        Assert.Equal(2 * 12 * 191, tokensSeen[^1]);       // step 190, the last evaluated (step 191 is not a multiple of 5)
        Assert.True(trainLosses[0] > 10.0, $"first train loss {trainLosses[0]}");
        Assert.True(trainLosses.TakeLast(5).Average() < trainLosses.Take(5).Average() - 2, string.Join(", ", trainLosses));
        Assert.True(valLosses[^1] < valLosses[0] - 2, string.Join(", ", valLosses));

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(40, lines.Length); // 39 evaluation lines and one sample
        Assert.Matches(@"^Ep 1 \(Step 000000\): Train loss \d+\.\d{3}, Val loss \d+\.\d{3}$", lines[0]);
        Assert.StartsWith("Ep 1 (Step 000190)", lines[38]);
        Assert.StartsWith("Every effort moves you", lines[39]);
    }

    [Fact]
    public void CalcLossLoaderIsNaNForAnEmptyLoaderAndAveragesTheFirstBatches()
    {
        using var run = NewRun(TinyConfig);
        var empty = new DataLoader(new GptDatasetV1(new ArrayTokenSequence([1, 2, 3]), 12, 12), 2, false, false, run.Generator);
        Assert.True(double.IsNaN(Pretraining.CalcLossLoader(empty, run.Model)));

        run.Model.Eval();
        double mean = Pretraining.CalcLossLoader(run.Loaders.Validation, run.Model, numBatches: 3);
        double sum = 0;
        using (run.Model.NoGrad())
        {
            int i = 0;
            foreach (var (input, target) in run.Loaders.Validation)
            {
                if (i++ == 3) break;
                sum += Pretraining.CalcLossBatch(input, target, run.Model).Value;
            }
        }
        Assert.Equal(sum / 3, mean, 12);
        Assert.Equal(Math.Exp(mean), Pretraining.Perplexity(mean));
        Assert.True(mean > 10.0 && mean < 11.5, $"untrained loss {mean}"); // ≈ ln(50257) = 10.8
    }

    [Theory]
    [InlineData(0)]   // untrained: near-uniform logits, the hardest case for identical argmaxes
    [InlineData(40)]  // after 40 steps: the model repeats the text it learned
    public void TheEpochSampleThroughTheKvCacheIsTheBooksUncachedLoop(int steps)
    {
        // generate_and_print_sample runs generate_text_simple (the whole window per token); GenerateSample uses the
        // KV cache. The ids must be the same, past the context too (4 prompt tokens + 30 new > context 12: the window slides).
        using var run = NewRun(TinyConfig);
        if (steps > 0)
            new Trainer(run.Model, run.Optimizer, run.Loaders, new TrainingOptions { Epochs = 1, EvalFreq = 1000, MaxSteps = steps, SampleTokens = 0 },
                Gpt2Tokenizer.Instance).Run();
        var tokenizer = Gpt2Tokenizer.Instance;
        const string prompt = "Every effort moves you";
        run.Model.Train();
        byte[] generatorBefore = run.Generator.GetState();

        string sample = Pretraining.GenerateSample(run.Model, tokenizer, prompt, maxNewTokens: 30);

        var book = BookGeneration.GenerateTextSimple(run.Model, TokenConversions.TextToTokenIds(prompt, tokenizer), 30, TinyConfig.ContextLength);
        Assert.Equal(TokenConversions.TokenIdsToText(book, tokenizer).Replace("\n", " "), sample);
        Assert.True(run.Model.IsTraining);                       // the caller's mode comes back
        Assert.Equal(generatorBefore, run.Generator.GetState()); // greedy: no random draws (the run's stream stays aligned)
    }

    [Fact]
    public void NaNLossStopsWithTheStep()
    {
        using var run = NewRun(TinyConfig, lr: float.PositiveInfinity);
        var trainer = new Trainer(run.Model, run.Optimizer, run.Loaders, new TrainingOptions { Epochs = 1, EvalFreq = 1000 }, Gpt2Tokenizer.Instance);
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.Run());
        Assert.Contains("step 1", e.Message);
        Assert.Contains("NaN", e.Message);
    }

    [Fact]
    public void GradientAccumulationOfOneBatchEqualsPlainTraining()
    {
        // batch 2 x accumulation 1 == batch 2: and accumulation 2 takes half the steps over the same tokens.
        var options = new TrainingOptions { Epochs = 1, EvalFreq = 1000, MaxSteps = 6, SampleTokens = 0 };
        using var plain = NewRun(TinyConfig with { DropRate = 0 });
        using var accumulated = NewRun(TinyConfig with { DropRate = 0 });
        new Trainer(plain.Model, plain.Optimizer, plain.Loaders, options, Gpt2Tokenizer.Instance).Run();
        var trainer = new Trainer(accumulated.Model, accumulated.Optimizer, accumulated.Loaders, options with { GradAccum = 1 }, Gpt2Tokenizer.Instance);
        trainer.Run();
        AssertSameWeights(plain.Model, accumulated.Model);

        using var two = NewRun(TinyConfig with { DropRate = 0 });
        var twoTrainer = new Trainer(two.Model, two.Optimizer, two.Loaders, options with { GradAccum = 2, MaxSteps = 3 }, Gpt2Tokenizer.Instance);
        twoTrainer.Run();
        Assert.Equal(2, twoTrainer.State.GlobalStep);
        Assert.Equal(6 * 2 * 12, twoTrainer.State.TokensSeen);
        Assert.Equal(96, Trainer.StepsPerEpoch(192, 2));
    }

    [Fact]
    public void AccumulatingTwoHalfBatchesEqualsOneFullBatchGradient()
    {
        // With dropout off, the mean of two micro-batch gradients equals the gradient of the two rows as one batch.
        using var run = NewRun(TinyConfig with { DropRate = 0 });
        var parameters = run.Model.Parameters();
        var pass = run.Loaders.Train.StartEpoch();
        pass.MoveNext();
        var (input, target) = pass.Current;
        run.Optimizer.ZeroGrad();
        Pretraining.CalcLossBatch(input, target, run.Model).Backward();
        var full = parameters.Select(p => p.Grad.ToArray()).ToList();

        run.Optimizer.ZeroGrad();
        for (int row = 0; row < 2; row++)
        {
            var x = TokenBatch.FromSequence(input.Row(row));
            var y = TokenBatch.FromSequence(target.Row(row));
            Pretraining.CalcLossBatch(x, y, run.Model).Backward();
        }
        Gradients.Scale(parameters, 0.5f);
        for (int i = 0; i < parameters.Count; i++)
        {
            var g = parameters[i].Grad.ToArray();
            for (int j = 0; j < g.Length; j++)
                Assert.True(Math.Abs(g[j] - full[i][j]) <= 1e-5f + 1e-3f * Math.Abs(full[i][j]), $"{parameters[i].Name}[{j}]: {g[j]} vs {full[i][j]}");
        }
    }

    private static void AssertSameWeights(GptModel a, GptModel b)
    {
        var pa = a.Parameters();
        var pb = b.Parameters();
        for (int i = 0; i < pa.Count; i++)
            Assert.True(pa[i].Value.Span.SequenceEqual(pb[i].Value.Span), $"{pa[i].Name} differs");
    }

    [Fact]
    public void GradientClippingStartsWhenTheWarmupEndsLikeAppendixD()
    {
        // Two runs from the same seed, one with a clip so tight it changes every step it touches: identical weights
        // through the 3 warmup steps, different from step 3 (global_step >= warmup_steps) on.
        var trainTokens = new TokenSlice(VerdictTokens.Value.Train, 0, 8 * 2 * 12 + 1);
        var options = new TrainingOptions { Epochs = 1, EvalFreq = 100, EvalIter = 1, SampleTokens = 0, WarmupSteps = 3 };
        float[] Trace(double gradClip, int steps)
        {
            using var run = NewRun(TinyConfig, trainTokens: trainTokens);
            var trainer = new Trainer(run.Model, run.Optimizer, run.Loaders, options with { GradClip = gradClip, MaxSteps = steps }, Gpt2Tokenizer.Instance);
            trainer.Run();
            return run.Model.Parameters()[^1].Value.Span.ToArray();
        }
        Assert.Equal(Trace(0, 3), Trace(1e-4, 3));
        Assert.NotEqual(Trace(0, 4), Trace(1e-4, 4));
    }

    [Theory]
    [InlineData(false, 20)] // stop at the end of epoch 1 (its sample already taken)
    [InlineData(false, 7)]  // stop in the middle of epoch 1
    [InlineData(true, 16)]  // Appendix D options on (accumulation 2: 10 steps an epoch), stop in epoch 2
    public void ResumeIsBitIdentical(bool appendixD, int stopAfterSteps)
    {
        var config = TinyConfig; // dropout 0.1, shuffled training loader
        // A short training split keeps it fast: 20 batches an epoch.
        var trainTokens = new TokenSlice(VerdictTokens.Value.Train, 0, 20 * 2 * 12 + 1);
        var options = new TrainingOptions { Epochs = 2, EvalFreq = 3, EvalIter = 1, SampleTokens = 5 };
        if (appendixD) options = options with { WarmupSteps = 3, MinLr = 1e-5, GradClip = 1.0, GradAccum = 2 };
        var runConfig = new RunConfig { Model = config, Training = options, BatchSize = 2, Stride = 12, LearningRate = 5e-4 };

        using var straight = NewRun(config, trainTokens: trainTokens);
        var straightTrainer = new Trainer(straight.Model, straight.Optimizer, straight.Loaders, options, Gpt2Tokenizer.Instance);
        Assert.Equal(TrainingOutcome.Completed, straightTrainer.Run());

        string checkpoint = Path.Combine(_dir, TrainingCheckpoint.FileNameFor(stopAfterSteps));
        using (var first = NewRun(config, trainTokens: trainTokens))
        {
            var trainer = new Trainer(first.Model, first.Optimizer, first.Loaders, options, Gpt2Tokenizer.Instance);
            trainer.ShouldStop = () => trainer.State.GlobalStep + 1 >= stopAfterSteps;
            Assert.Equal(TrainingOutcome.Stopped, trainer.Run());
            TrainingCheckpoint.Save(checkpoint, runConfig, first.Model, first.Optimizer, first.Generator, trainer.State);
        }

        var loaded = TrainingCheckpoint.Load(_dir);
        Assert.Equal(checkpoint, loaded.Path);
        var (model, optimizer, generator, contents) = (loaded.Model, loaded.Optimizer, loaded.Generator, loaded);
        using var resumed = new Run(model, optimizer, generator, DataLoaders.CreateTrainValidation(
            trainTokens, VerdictTokens.Value.Validation, contents.Config.BatchSize, config.ContextLength, contents.Config.Stride, generator));
        Assert.Equal(runConfig, contents.Config);
        var resumedTrainer = new Trainer(model, optimizer, resumed.Loaders, contents.Config.Training, Gpt2Tokenizer.Instance, contents.State);
        Assert.Equal(TrainingOutcome.Completed, resumedTrainer.Run());

        Assert.Equal(straightTrainer.State.GlobalStep, resumedTrainer.State.GlobalStep);
        Assert.Equal(straightTrainer.State.TokensSeen, resumedTrainer.State.TokensSeen);
        Assert.Equal(straightTrainer.State.TrainLosses, resumedTrainer.State.TrainLosses);
        Assert.Equal(straightTrainer.State.ValLosses, resumedTrainer.State.ValLosses);
        Assert.Equal(straightTrainer.State.TrackTokensSeen, resumedTrainer.State.TrackTokensSeen);
        Assert.Equal(straightTrainer.State.Samples.Select(s => s.Text), resumedTrainer.State.Samples.Select(s => s.Text));
        AssertSameWeights(straight.Model, model);
        Assert.Equal(straight.Optimizer.StepCount, optimizer.StepCount);
        Assert.Equal(straight.Generator.GetState(), generator.GetState());
    }
}
