using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Tensors;

/// <summary>
/// The book's model and data with the torch generator, against bench/pytorch/record_book_model.py:
/// <c>torch.manual_seed(123); model = GPTModel(GPT_CONFIG_124M)</c> and the chapter's loaders.
/// </summary>
[Trait("Category", "Book124M")] // builds the full-size model (162M parameters) and runs it
public sealed class TorchGeneratorModelTests : IClassFixture<TorchGeneratorModelTests.BookModel>
{
    /// <summary>One seed-123 Book124M model for the class (building it draws 162M numbers).</summary>
    public sealed class BookModel : IDisposable
    {
        public BookModel()
        {
            var generator = new TorchGenerator(123);
            Model = new GptModel(GptConfig.Book124M, generator);
            StateAfterInit = generator.GetState();
        }

        public GptModel Model { get; }
        public byte[] StateAfterInit { get; }
        public void Dispose() => Model.Dispose();
    }

    private static readonly Lazy<JsonElement> Expected = new(() =>
        JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("torch-rng", "book-model.json"))).RootElement);

    private static readonly Lazy<JsonElement> Tokens = new(() =>
        JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("torch-rng", "verdict-tokens.json"))).RootElement);

    private readonly BookModel _book;

    public TorchGeneratorModelTests(BookModel book) => _book = book;

    private static int[] Ids(string name) => Tokens.Value.GetProperty(name).EnumerateArray().Select(v => v.GetInt32()).ToArray();

    /// <summary>GPTDatasetV1 windows: input = ids[i, i + len), target shifted by one, for i in range(0, n - len, stride).</summary>
    private static List<(int[] Input, int[] Target)> Windows(int[] ids, int length, int stride)
    {
        var windows = new List<(int[], int[])>();
        for (int i = 0; i < ids.Length - length; i += stride)
            windows.Add((ids[i..(i + length)], ids[(i + 1)..(i + length + 1)]));
        return windows;
    }

    private static (TokenBatch Inputs, TokenBatch Targets) Batch(List<(int[] Input, int[] Target)> windows, IEnumerable<int> indices)
    {
        var chosen = indices.Select(i => windows[i]).ToList();
        int length = chosen[0].Input.Length;
        return (new TokenBatch(chosen.SelectMany(w => w.Input).ToArray(), chosen.Count, length),
                new TokenBatch(chosen.SelectMany(w => w.Target).ToArray(), chosen.Count, length));
    }

    private double BatchLoss((TokenBatch Inputs, TokenBatch Targets) batch)
        => Losses.CrossEntropy(_book.Model.Forward(batch.Inputs), batch.Targets).Value;

    [Fact]
    public void EveryParameterMatchesTorchBitForBit()
    {
        var expected = Expected.Value.GetProperty("parameters");
        var state = _book.Model.StateDict();
        Assert.Equal(expected.EnumerateObject().Select(p => p.Name), state.Keys);
        Assert.Equal(Expected.Value.GetProperty("parameter_count").GetInt64(), _book.Model.ParameterCount);
        foreach (var p in expected.EnumerateObject())
        {
            var values = state[p.Name].Span;
            string sha = Convert.ToHexStringLower(SHA256.HashData(MemoryMarshal.AsBytes(values)));
            if (sha != p.Value.GetProperty("sha256").GetString())
            {
                var first = p.Value.GetProperty("first").EnumerateArray().Select(v => (float)v.GetDouble());
                Assert.Fail($"{p.Name}: expected first values {string.Join(", ", first)}, got {string.Join(", ", values[..4].ToArray())}");
            }
        }
        // And the generator is left exactly where torch.get_rng_state() is after the constructor.
        Assert.Equal(Expected.Value.GetProperty("rng_state_after_init_sha256").GetString(),
            Convert.ToHexStringLower(SHA256.HashData(_book.StateAfterInit)));
    }

    [Fact]
    public void InitialLossesMatchTheBook()
    {
        // The chapter: model.eval(); calc_loss_loader over every batch (train: 9 batches of 2, val: 1).
        int ctx = GptConfig.Book124M.ContextLength;
        var train = Windows(Ids("train_ids"), ctx, ctx);
        var val = Windows(Ids("val_ids"), ctx, ctx);
        Assert.Equal(Expected.Value.GetProperty("train_windows").GetInt32(), train.Count);
        Assert.Equal(Expected.Value.GetProperty("val_windows").GetInt32(), val.Count);

        var model = _book.Model;
        model.Eval();
        double trainLoss = 0, valLoss = 0;
        using (model.NoGrad())
        {
            for (int b = 0; b < train.Count / 2; b++) trainLoss += BatchLoss(Batch(train, [2 * b, 2 * b + 1]));
            trainLoss /= train.Count / 2;
            valLoss = BatchLoss(Batch(val, Enumerable.Range(0, val.Count)));
        }
        model.Train();
        Assert.Equal(10.98758, Math.Round(trainLoss, 5), 4);
        Assert.Equal(10.98111, Math.Round(valLoss, 5), 4);
        Assert.Equal(Expected.Value.GetProperty("initial_train_loss").GetDouble(), trainLoss, 4);
        Assert.Equal(Expected.Value.GetProperty("initial_val_loss").GetDouble(), valLoss, 4);
    }

    [Fact]
    public void FirstTrainingBatchDrawsTheBooksShuffleAndDropout()
    {
        var e = Expected.Value;
        var generator = new TorchGenerator(0);
        generator.SetState(_book.StateAfterInit);
        // iter(train_loader): _BaseDataLoaderIter draws its base seed, then RandomSampler its generator seed.
        Assert.Equal(e.GetProperty("epoch1_base_seed").GetInt64(), generator.RandomInt64());
        long samplerSeed = generator.RandomInt64();
        Assert.Equal(e.GetProperty("epoch1_sampler_seed").GetInt64(), samplerSeed);
        int ctx = GptConfig.Book124M.ContextLength;
        var train = Windows(Ids("train_ids"), ctx, ctx);
        var order = new int[train.Count];
        generator.NewGenerator((ulong)samplerSeed).RandPerm(order);
        Assert.Equal(e.GetProperty("epoch1_order").EnumerateArray().Select(v => v.GetInt32()), order);

        var batch = Batch(train, order[..2]);
        var firstIds = e.GetProperty("first_batch_inputs_first").EnumerateArray()
            .Select(row => row.EnumerateArray().Select(v => v.GetInt32()).ToArray()).ToArray();
        for (int row = 0; row < 2; row++) Assert.Equal(firstIds[row], batch.Inputs.Row(row)[..4].ToArray());

        // The first training step's forward pass in train mode: dropout masks drawn in forward order.
        var model = _book.Model;
        var previous = model.DropoutGenerator;
        try
        {
            model.DropoutGenerator = generator;
            model.Train();
            using (model.NoGrad())
                Assert.Equal(e.GetProperty("first_batch_train_loss").GetDouble(), BatchLoss(batch), 4);
            model.Eval();
            using (model.NoGrad())
                Assert.Equal(e.GetProperty("first_batch_eval_loss").GetDouble(), BatchLoss(batch), 4);
        }
        finally
        {
            model.DropoutGenerator = previous;
            model.Train();
        }
    }
}
