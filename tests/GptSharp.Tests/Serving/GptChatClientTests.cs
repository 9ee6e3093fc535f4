using GptSharp.Generation;
using GptSharp.Serving;
using Microsoft.Extensions.AI;

namespace GptSharp.Tests.Serving;

/// <summary><see cref="GptChatClient"/> in process: the Microsoft.Extensions.AI abstraction over a loaded model.</summary>
[Collection(ServingCollection.Name)]
public class GptChatClientTests(ServingFixture server)
{
    private static readonly ChatMessage[] Messages = [new(ChatRole.User, "Tell me a story about a painter")];

    [Fact]
    public async Task AnswersAndStreamsTheSameReplyForTheSameSeed()
    {
        IChatClient client = new GptChatClient(server.Scheduler);
        var options = new ChatOptions { Seed = 21, Temperature = 1.1f, TopK = 30, MaxOutputTokens = 12, StopSequences = ["zzz"] };
        ChatResponse response = await client.GetResponseAsync(Messages, options);

        string transcript = ChatTemplate.Format([("user", "Tell me a story about a painter")]);
        string expected = server.ReferenceText(transcript, new CompletionSettings { Temperature = 1.1f, TopK = 30, MaxTokens = 12 }, 21);
        foreach (string stop in ChatTemplate.StopTexts.Append("zzz"))
            if (expected.IndexOf(stop, StringComparison.Ordinal) is int at and >= 0) expected = expected[..at];
        Assert.Equal(expected.TrimStart(), response.Text);
        Assert.Equal(ChatRole.Assistant, response.Messages[0].Role);
        Assert.Equal(TextCompletion.Encode(transcript).Length, response.Usage!.InputTokenCount);
        Assert.NotNull(response.FinishReason);

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(Messages, options)) updates.Add(update);
        Assert.Equal(response.Text, string.Concat(updates.Select(u => u.Text)));
        Assert.Contains(updates, u => u.FinishReason == response.FinishReason);
        var usage = updates.SelectMany(u => u.Contents).OfType<UsageContent>().Single();
        Assert.Equal(response.Usage.OutputTokenCount, usage.Details.OutputTokenCount);
        Assert.Equal("gptsharp", client.GetService<ChatClientMetadata>()!.DefaultModelId);
    }

    [Fact]
    public async Task AConsumerThatStopsEarlyFreesItsSlot()
    {
        IChatClient client = new GptChatClient(server.Scheduler);
        await foreach (var _ in client.GetStreamingResponseAsync(Messages, new ChatOptions { Seed = 1, MaxOutputTokens = 40 }))
            break;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (server.Scheduler.ActiveCount > 0 && clock.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(10);
        Assert.Equal(0, server.Scheduler.ActiveCount);
    }

    [Fact]
    public async Task BadOptionsAreArgumentErrors()
    {
        IChatClient client = new GptChatClient(server.Scheduler);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Messages, new ChatOptions { TopP = 1.5f }));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.Tool, "x")]));
    }
}
