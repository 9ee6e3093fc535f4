using GptSharp.Data;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Tests.Data;

public class DataLoaderTests
{
    private static ArrayTokenSequence Ramp(int count) => new(Enumerable.Range(0, count).ToArray());

    [Theory]
    [InlineData(100, 4, 4, 24)]   // range(0, 96, 4): 24 windows
    [InlineData(100, 4, 1, 96)]   // every start but the last four
    [InlineData(101, 4, 4, 25)]   // one more token: window at 96 has its target
    [InlineData(5, 4, 4, 1)]
    [InlineData(4, 4, 4, 0)]      // no token after the window: no window
    [InlineData(5145, 256, 256, 20)]
    public void WindowCountIsTheBooksRange(int tokens, int maxLength, int stride, int expected)
    {
        var dataset = new GptDatasetV1(Ramp(tokens), maxLength, stride);
        Assert.Equal(expected, dataset.Count);
        Assert.Equal(Enumerable.Range(0, Math.Max(0, tokens - maxLength)).Where(i => i % stride == 0).Count(), dataset.Count);
    }

    [Fact]
    public void TargetIsInputShiftedByOneAndStrideOverlaps()
    {
        var dataset = new GptDatasetV1(Ramp(50), maxLength: 8, stride: 3);
        var input = new int[8];
        var target = new int[8];
        dataset.GetItem(2, input, target);
        Assert.Equal(Enumerable.Range(6, 8), input);
        Assert.Equal(Enumerable.Range(7, 8), target);
        var next = new int[8];
        dataset.GetItem(3, next, target);
        // Windows 2 and 3 overlap by maxLength - stride = 5 ids.
        Assert.Equal(input[3..], next[..5]);
    }

    [Fact]
    public void BatchesHaveTheRightShapesAndDropLastDropsTheShortBatch()
    {
        var dataset = new GptDatasetV1(Ramp(100), 4, 4); // 24 windows
        var keep = new DataLoader(dataset, 5, shuffle: false, dropLast: false, generator: null);
        var drop = new DataLoader(dataset, 5, shuffle: false, dropLast: true, generator: null);
        Assert.Equal(5, keep.Count);
        Assert.Equal(4, drop.Count);
        var shapes = keep.Select(b => (b.Input.BatchSize, b.Input.SequenceLength, b.Target.BatchSize)).ToList();
        Assert.Equal([(5, 4, 5), (5, 4, 5), (5, 4, 5), (5, 4, 5), (4, 4, 4)], shapes);
        Assert.Equal(4, drop.Count());
        // In order without shuffle: batch 1 row 0 is window 5, starting at token 20.
        using var pass = keep.StartEpoch();
        pass.MoveNext();
        pass.MoveNext();
        Assert.Equal([20, 21, 22, 23], pass.Current.Input.Row(0).ToArray());
        Assert.Equal([21, 22, 23, 24], pass.Current.Target.Row(0).ToArray());
    }

    [Fact]
    public void SeededShuffleIsReproducibleAndAPermutation()
    {
        List<int> FirstIds(ulong seed)
        {
            var loader = new DataLoader(new GptDatasetV1(Ramp(400), 4, 4), 3, shuffle: true, dropLast: true, new FastRandom(seed));
            return loader.SelectMany(b => Enumerable.Range(0, b.Input.BatchSize).Select(r => b.Input[r, 0])).ToList();
        }
        var a = FirstIds(123);
        Assert.Equal(a, FirstIds(123));
        Assert.NotEqual(a, FirstIds(124));
        Assert.Equal(99, a.Count); // 99 windows, batch 3, drop_last: 33 batches
        Assert.Equal(a.Count, a.Distinct().Count());
        Assert.All(a, id => Assert.Equal(0, id % 4));
        Assert.NotEqual(a.OrderBy(x => x).ToList(), a);
    }

    [Fact]
    public void EachPassDrawsLikePyTorchsDataLoaderIterator()
    {
        // PyTorch: iter(loader) draws _base_seed, then RandomSampler draws its seed and permutes with a fresh generator.
        var generator = new FastRandom(7);
        var reference = new FastRandom(7);
        var dataset = new GptDatasetV1(Ramp(100), 4, 4);
        var shuffled = new DataLoader(dataset, 2, shuffle: true, dropLast: true, generator);
        var ordered = new DataLoader(dataset, 2, shuffle: false, dropLast: false, generator);

        using var pass = shuffled.StartEpoch();
        reference.RandomInt64();
        long seed = reference.RandomInt64();
        Assert.Equal(seed, pass.SamplerSeed);
        var order = new int[dataset.Count];
        new FastRandom((ulong)seed).RandPerm(order);
        pass.MoveNext();
        Assert.Equal(order[0] * 4, pass.Current.Input[0, 0]);
        Assert.Equal(order[1] * 4, pass.Current.Input[1, 0]);

        using var plain = ordered.StartEpoch(); // draws only the base seed
        reference.RandomInt64();
        Assert.Null(plain.SamplerSeed);
        Assert.Equal(reference.RandomInt64(), generator.RandomInt64());
    }

    [Fact]
    public void ResumedPassContinuesWithTheSameOrder()
    {
        var generator = new FastRandom(3);
        var loader = new DataLoader(new GptDatasetV1(Ramp(200), 4, 4), 2, shuffle: true, dropLast: true, generator);
        var full = new List<int>();
        using var pass = loader.StartEpoch();
        while (pass.MoveNext()) full.Add(pass.Current.Input[0, 0]);
        var stateAfter = generator.GetState();

        using var resumed = loader.ResumeEpoch(pass.SamplerSeed, 10);
        var rest = new List<int>();
        while (resumed.MoveNext()) rest.Add(resumed.Current.Input[0, 0]);
        Assert.Equal(full[10..], rest);
        Assert.Equal(stateAfter, generator.GetState()); // resuming draws nothing
    }

    [Fact]
    public void NotEnoughTokensNamesBothCounts()
    {
        var generator = new FastRandom(1);
        var e = Assert.Throws<ArgumentException>(() =>
            DataLoaders.CreateTrainValidation(Ramp(300), Ramp(300), batchSize: 2, contextLength: 256, stride: 256, generator));
        Assert.Contains("training loader", e.Message);
        Assert.Contains("300 tokens", e.Message);
        Assert.Contains("513", e.Message);
        var v = Assert.Throws<ArgumentException>(() =>
            DataLoaders.CreateTrainValidation(Ramp(600), Ramp(256), batchSize: 2, contextLength: 256, stride: 256, generator));
        Assert.Contains("validation loader", v.Message);
        Assert.Contains("256 tokens", v.Message);
        Assert.Contains("257", v.Message);
        var ok = DataLoaders.CreateTrainValidation(Ramp(513), Ramp(257), 2, 256, 256, generator);
        Assert.Equal(1, ok.Train.Count);
        Assert.Equal(1, ok.Validation.Count);
    }

    [Fact]
    public void SplitIsTheBooksCharacterSplit()
    {
        string text = new string('a', 20479);
        var (train, validation) = TextCorpus.SplitTrainValidation(text);
        Assert.Equal(18431, train.Length); // int(0.9 * 20479)
        Assert.Equal(2048, validation.Length);
    }

    [Fact]
    public void TheVerdictIsBundled()
    {
        string text = TextCorpus.TheVerdict();
        Assert.Equal(20479, text.Length);
        Assert.StartsWith("I HAD always thought Jack Gisburn", text);
    }
}
