using System.Net;
using GptSharp.Pretrained;

namespace GptSharp.Tests.Checkpoints.TensorFlow;

public sealed class Gpt2DownloaderTests : IDisposable
{
    private readonly LocalHttpServer _server = new();
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-dl-" + Guid.NewGuid().ToString("N"));
    private readonly HttpClient _http = new();
    private readonly Gpt2ModelSize _size;
    private readonly Dictionary<string, byte[]> _contents = new();

    public Gpt2DownloaderTests()
    {
        // A fake size with OpenAI's seven file names and small contents; known sizes for some, Content-Length for the rest.
        var rng = new Random(5);
        var known = new Dictionary<string, long>();
        int i = 0;
        foreach (string file in Gpt2Models.All[0].FileNames)
        {
            var bytes = new byte[file.StartsWith("model.ckpt.data") ? 3_000_000 : 100 + 37 * i];
            rng.NextBytes(bytes);
            _contents[file] = bytes;
            _server.Files[$"/models/test/{file}"] = bytes;
            if (i++ % 2 == 0) known[file] = bytes.Length;
        }
        known["model.ckpt.data-00000-of-00001"] = 3_000_000;
        _size = new Gpt2ModelSize("test", "gpt2-test", known);
    }

    private Gpt2Downloader Downloader(IDownloadProgress? progress = null) => new(_http)
    {
        BaseUrl = _server.BaseUrl + "models",
        InitialRetryDelay = TimeSpan.FromMilliseconds(5),
        MaxAttempts = 3,
        Progress = progress,
    };

    [Fact]
    public async Task DownloadsAllSevenFilesAndThenSkipsThem()
    {
        var log = new RecordingProgress();
        await Downloader(log).DownloadModelAsync(_size, _dir);
        foreach (var (file, bytes) in _contents)
            Assert.Equal(bytes, await File.ReadAllBytesAsync(Path.Combine(_dir, file)));
        Assert.Empty(Directory.GetFiles(_dir, "*.part"));
        Assert.Equal(7, log.Completed.Count);
        Assert.True(Gpt2Models.IsComplete(_size, _dir));

        int requests = _server.Requests.Count;
        var again = new RecordingProgress();
        await Downloader(again).DownloadModelAsync(_size, _dir);
        Assert.Equal(requests, _server.Requests.Count); // nothing fetched
        Assert.Equal(7, again.Skipped.Count);
    }

    [Fact]
    public async Task ResumesAfterTheServerDropsTheConnectionMidFile()
    {
        const string data = "model.ckpt.data-00000-of-00001";
        _server.DropOnceAfter[$"/models/test/{data}"] = 1_000_000;
        var log = new RecordingProgress();
        await Downloader(log).DownloadModelAsync(_size, _dir);
        Assert.Equal(_contents[data], await File.ReadAllBytesAsync(Path.Combine(_dir, data)));
        var dataRequests = _server.Requests.Where(r => r.Path.EndsWith(data)).ToList();
        Assert.Equal(2, dataRequests.Count);
        Assert.Null(dataRequests[0].Range);
        Assert.NotNull(dataRequests[1].Range);
        long resumedAt = long.Parse(dataRequests[1].Range!["bytes=".Length..^1]);
        Assert.InRange(resumedAt, 1, 1_000_000);
        Assert.Single(log.Retries);
        Assert.Empty(Directory.GetFiles(_dir, "*.part"));
    }

    [Fact]
    public async Task ResumesAPartFileLeftByAnEarlierRun()
    {
        Directory.CreateDirectory(_dir);
        const string data = "model.ckpt.data-00000-of-00001";
        await File.WriteAllBytesAsync(Path.Combine(_dir, data + ".part"), _contents[data][..1234]);
        await File.WriteAllTextAsync(Path.Combine(_dir, data + ".part.validator"), "\"v1\"");
        await Downloader().DownloadModelAsync(_size, _dir);
        Assert.Equal(_contents[data], await File.ReadAllBytesAsync(Path.Combine(_dir, data)));
        Assert.Contains(_server.Requests, r => r.Path.EndsWith(data) && r.Range == "bytes=1234-");
        Assert.Empty(Directory.GetFiles(_dir, "*.validator"));
    }

    [Fact]
    public async Task APartFileOfAnotherVersionIsNotResumed()
    {
        Directory.CreateDirectory(_dir);
        const string data = "model.ckpt.data-00000-of-00001";
        await File.WriteAllBytesAsync(Path.Combine(_dir, data + ".part"), new byte[1234]); // bytes of an older version
        await File.WriteAllTextAsync(Path.Combine(_dir, data + ".part.validator"), "\"v0\"");
        await Downloader().DownloadModelAsync(_size, _dir);
        Assert.Equal(_contents[data], await File.ReadAllBytesAsync(Path.Combine(_dir, data)));
    }

    [Fact]
    public async Task APartFileWithoutAValidatorIsStartedOver()
    {
        Directory.CreateDirectory(_dir);
        const string data = "model.ckpt.data-00000-of-00001";
        await File.WriteAllBytesAsync(Path.Combine(_dir, data + ".part"), new byte[1234]);
        await Downloader().DownloadModelAsync(_size, _dir);
        Assert.Equal(_contents[data], await File.ReadAllBytesAsync(Path.Combine(_dir, data)));
        Assert.DoesNotContain(_server.Requests, r => r.Path.EndsWith(data) && r.Range is not null);
    }

    [Fact]
    public async Task AServerThatNeverStopsCannotFillTheDisk()
    {
        string unknownSize = _size.FileNames.First(f => _size.ExpectedSize(f) is null);
        _server.Endless[$"/models/test/{unknownSize}"] = 50_000_000;
        var downloader = new Gpt2Downloader(_http) { BaseUrl = _server.BaseUrl + "models", MaxAttempts = 1, MaxUnknownSizeBytes = 100_000 };
        Directory.CreateDirectory(_dir);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => downloader.DownloadFileAsync(new Uri(_server.BaseUrl + "models/test/" + unknownSize), Path.Combine(_dir, unknownSize), null));
        Assert.Contains("more than the 100,000 bytes", e.Message);
        Assert.Empty(Directory.GetFiles(_dir));
    }

    [Fact]
    public async Task AKnownSizeFileStopsAsSoonAsTheBodyPassesIt()
    {
        const string data = "model.ckpt.data-00000-of-00001";
        _server.Endless[$"/models/test/{data}"] = 50_000_000;
        Directory.CreateDirectory(_dir);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Downloader().DownloadFileAsync(new Uri(_server.BaseUrl + "models/test/" + data), Path.Combine(_dir, data), 3_000_000));
        Assert.Contains("more than the 3,000,000 bytes", e.Message);
        Assert.Empty(Directory.GetFiles(_dir));
    }

    [Fact]
    public async Task A416ThatMatchesAShortPartIsNotTakenAsComplete()
    {
        Directory.CreateDirectory(_dir);
        const string data = "model.ckpt.data-00000-of-00001";
        _server.Lying416[$"/models/test/{data}"] = true;
        await File.WriteAllBytesAsync(Path.Combine(_dir, data + ".part"), _contents[data][..5000]);
        await File.WriteAllTextAsync(Path.Combine(_dir, data + ".part.validator"), "\"v1\"");
        await Downloader().DownloadModelAsync(_size, _dir);
        Assert.Equal(_contents[data], await File.ReadAllBytesAsync(Path.Combine(_dir, data)));
    }

    [Fact]
    public async Task RestartsWhenTheServerIgnoresRange()
    {
        Directory.CreateDirectory(_dir);
        _server.IgnoreRange = true;
        const string data = "model.ckpt.data-00000-of-00001";
        await File.WriteAllBytesAsync(Path.Combine(_dir, data + ".part"), new byte[5000]); // stale bytes
        await Downloader().DownloadModelAsync(_size, _dir);
        Assert.Equal(_contents[data], await File.ReadAllBytesAsync(Path.Combine(_dir, data)));
    }

    [Fact]
    public async Task APartFileOfUnknownSizeIsFetchedAgainNotTrusted()
    {
        // Its length cannot be checked, so a 416 could accept a short file: small files of unknown size are fetched whole.
        Directory.CreateDirectory(_dir);
        string unknownSize = _size.FileNames.First(f => _size.ExpectedSize(f) is null);
        await File.WriteAllBytesAsync(Path.Combine(_dir, unknownSize + ".part"), _contents[unknownSize][..10]);
        await Downloader().DownloadModelAsync(_size, _dir);
        Assert.Equal(_contents[unknownSize], await File.ReadAllBytesAsync(Path.Combine(_dir, unknownSize)));
        Assert.DoesNotContain(_server.Requests, r => r.Path.EndsWith(unknownSize) && r.Range is not null);
        Assert.Empty(Directory.GetFiles(_dir, "*.part"));
    }

    [Fact]
    public async Task CancellingLeavesOnlyThePartFile()
    {
        const string data = "model.ckpt.data-00000-of-00001";
        using var cts = new CancellationTokenSource();
        var log = new RecordingProgress { OnAdvanced = (file, done) => { if (file == data && done > 0) cts.Cancel(); } };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Downloader(log).DownloadModelAsync(_size, _dir, cts.Token));
        Assert.False(File.Exists(Path.Combine(_dir, data)));
        Assert.True(File.Exists(Path.Combine(_dir, data + ".part")));

        await Downloader().DownloadModelAsync(_size, _dir); // the next run resumes it
        Assert.Equal(_contents[data], await File.ReadAllBytesAsync(Path.Combine(_dir, data)));
    }

    [Fact]
    public async Task SizeMismatchIsAClearError()
    {
        _server.Files["/models/test/checkpoint"] = new byte[50]; // known size is 100
        var ex = await Assert.ThrowsAsync<InvalidDataException>(() => Downloader().DownloadModelAsync(_size, _dir));
        Assert.Contains("size mismatch", ex.Message);
        Assert.Contains("checkpoint", ex.Message);
        Assert.False(File.Exists(Path.Combine(_dir, "checkpoint")));
        Assert.Single(_server.Requests); // not retried
    }

    [Fact]
    public async Task NotFoundIsAClearErrorWithoutRetries()
    {
        _server.Files.TryRemove("/models/test/hparams.json", out _);
        var ex = await Assert.ThrowsAsync<HttpRequestException>(() => Downloader().DownloadModelAsync(_size, _dir));
        Assert.Equal(HttpStatusCode.NotFound, ex.StatusCode);
        Assert.Contains("/models/test/hparams.json: HTTP 404", ex.Message);
        Assert.Single(_server.Requests, r => r.Path.EndsWith("hparams.json"));
        Assert.False(File.Exists(Path.Combine(_dir, "hparams.json.part")));
    }

    [Fact]
    public async Task UnreachableServerFailsAfterRetriesWithAHint()
    {
        string url = _server.BaseUrl;
        _server.Dispose(); // nothing listens there any more
        var log = new RecordingProgress();
        var downloader = new Gpt2Downloader(_http) { BaseUrl = url + "models", InitialRetryDelay = TimeSpan.FromMilliseconds(1), MaxAttempts = 3, Progress = log };
        var ex = await Assert.ThrowsAsync<HttpRequestException>(() => downloader.DownloadModelAsync(_size, _dir));
        Assert.Contains("after 3 attempts", ex.Message);
        Assert.Contains("Gpt2Downloader.BaseUrl", ex.Message);
        Assert.Equal(2, log.Retries.Count);
    }

    [Fact]
    public void SizesAndNamesResolve()
    {
        Assert.Equal("124M", Gpt2Models.Find("gpt2-small").Name);
        Assert.Equal("355M", Gpt2Models.Find("355M").Name);
        Assert.Equal("774M", Gpt2Models.Find("GPT2-LARGE").Name);
        Assert.Equal("1558M", Gpt2Models.Find("gpt2-1558M").Name);
        Assert.Contains("unknown GPT-2 model 'gpt3'", Assert.Throws<ArgumentException>(() => Gpt2Models.Find("gpt3")).Message);
        var small = Gpt2Models.Find("124M");
        long[] official = [77, 1_042_301, 90, 497_759_232, 5_215, 471_155, 456_318];
        Assert.Equal(official, small.FileNames.Select(f => small.ExpectedSize(f)!.Value));
        Assert.Equal(new Uri("https://openaipublic.blob.core.windows.net/gpt-2/models/124M/model.ckpt.index"),
            new Gpt2Downloader(_http).FileUrl(small, "model.ckpt.index"));
        Assert.EndsWith(Path.Combine("gpt2", "1558M"), Gpt2Models.CacheDirectory(Gpt2Models.Find("gpt2-xl"), "/h"));
        // Data-shard sizes are 4 bytes per checkpoint tensor element (the tied head is not stored).
        foreach (var (size, config) in new[] { ("355M", GptSharp.Model.GptConfig.Gpt2Medium), ("774M", GptSharp.Model.GptConfig.Gpt2Large), ("1558M", GptSharp.Model.GptConfig.Gpt2XL) })
        {
            var c = config with { QkvBias = true };
            long elements = c.ParameterCount - (long)c.VocabSize * c.EmbeddingDim;
            Assert.Equal(4 * elements, Gpt2Models.Find(size).ExpectedSize("model.ckpt.data-00000-of-00001"));
        }
    }

    public void Dispose()
    {
        _server.Dispose();
        _http.Dispose();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    private sealed class RecordingProgress : IDownloadProgress
    {
        public List<string> Skipped { get; } = new();
        public List<string> Completed { get; } = new();
        public List<string> Retries { get; } = new();
        public Action<string, long>? OnAdvanced { get; init; }
        void IDownloadProgress.Skipped(string fileName, long bytes) => Skipped.Add(fileName);
        void IDownloadProgress.Started(string fileName, long? totalBytes, long resumedFrom) { }
        void IDownloadProgress.Advanced(string fileName, long bytesDone) => OnAdvanced?.Invoke(fileName, bytesDone);
        void IDownloadProgress.Retrying(string fileName, int attempt, TimeSpan delay, string reason) => Retries.Add(reason);
        void IDownloadProgress.Completed(string fileName, long bytes) => Completed.Add(fileName);
    }
}
